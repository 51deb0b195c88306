"""Offline twins of the paper's tasks: same schema and metric, generated from a seed in seconds.

- `synth_gsm`: 2-4-step arithmetic word problems; one step per solution line; ends with `#### N`.
- `synth_gsm_plus`: perturbations of `synth_gsm` test problems in the GSM-Plus categories that fit
  (numerical substitution, digit expansion, distraction insertion, adding / reversing an operation).
- `synth_summ`: template dialogues between two people about a topic, with 3 reference summaries.

    python -m adaswitch_lib.synth synth_gsm test 3      # print three examples
"""

from __future__ import annotations

import random
import re
import sys

from adaswitch_lib.config import SynthConfig

NAMES = [
    "Ben",
    "Amy",
    "Tom",
    "Lily",
    "Sam",
    "Mia",
    "Jack",
    "Emma",
    "Leo",
    "Zoe",
    "Max",
    "Ava",
    "Noah",
    "Ella",
    "Finn",
    "Ruby",
    "Omar",
    "Nina",
    "Hugo",
    "Iris",
]
ITEMS = [
    "apples",
    "marbles",
    "stickers",
    "books",
    "coins",
    "pencils",
    "cookies",
    "shells",
    "cards",
    "stamps",
    "eggs",
    "flowers",
    "candies",
    "toys",
    "balloons",
    "buttons",
]
_OP_TEXT = {  # two phrasings each, so the twin is not one fixed sentence per operation
    "+": ["{name} gets {b} more.", "{name} finds {b} more."],
    "-": ["{name} gives away {b}.", "{name} loses {b}."],
    "*": [
        "Then the number of {item} becomes {b} times as large.",
        "Then {name} ends up with {b} times as many.",
    ],
    "/": [
        "Then {name} splits them into {b} equal groups and keeps one group.",
        "Then {name} shares them equally with {b} friends, keeping one share.",
    ],
}
_APPLY = {
    "+": lambda v, b: v + b,
    "-": lambda v, b: v - b,
    "*": lambda v, b: v * b,
    "/": lambda v, b: v // b,
}
_INVERSE = {"+": "-", "-": "+", "*": "/", "/": "*"}
PERTURBATIONS = (
    "numerical substitution",
    "digit expansion",
    "distraction insertion",
    "adding operation",
    "reversing operation",
)


def _pick_step(rng: random.Random, value: int, cfg: SynthConfig, scale: int = 1):
    """A valid (op, operand) for the current value, keeping every value in [0, max_value*scale]."""
    top = cfg.max_value * scale
    for _ in range(50):
        op = rng.choice(cfg.operations)
        if op == "+" and value + scale <= top:
            return op, scale * rng.randint(1, min(cfg.max_operand, (top - value) // scale))
        if op == "-" and value >= scale:
            return op, scale * rng.randint(1, min(cfg.max_operand, value // scale))
        if op == "*" and value >= 2 and value * 2 <= top:
            return op, rng.choice([b for b in (2, 3, 4) if value * b <= top])
        if op == "/":
            divisors = [b for b in (2, 3, 4, 5) if value % b == 0 and value >= b]
            if divisors:
                return op, rng.choice(divisors)
    return "+", scale  # always valid when the loop found nothing (value small, top large)


def _random_problem(rng: random.Random, cfg: SynthConfig, n_steps: int | None = None) -> dict:
    n_steps = n_steps or rng.randint(cfg.min_steps, cfg.max_steps)
    value = start = rng.randint(1, cfg.max_value)
    steps = []
    for _ in range(n_steps):
        op, b = _pick_step(rng, value, cfg)
        steps.append((op, b))
        value = _APPLY[op](value, b)
    phrasing = [rng.randrange(2) for _ in steps]
    return dict(
        name=rng.choice(NAMES), item=rng.choice(ITEMS), start=start, steps=steps, phrasing=phrasing
    )


def _solve(start: int, steps) -> tuple[list[str], int]:
    lines, value = [], start
    for op, b in steps:
        new = _APPLY[op](value, b)
        lines.append(f"{value} {op} {b} = {new}")
        value = new
    return lines, value


def render_gsm(
    problem: dict, reverse: bool = False, distraction: str | None = None
) -> tuple[str, str, str]:
    """(question, solution, answer) of a problem. `reverse` states the end value and asks for the
    start."""
    name, item, steps = problem["name"], problem["item"], problem["steps"]
    op_sentences = [
        _OP_TEXT[op][k].format(name=name, item=item, b=b)
        for (op, b), k in zip(steps, problem["phrasing"])
    ]
    lines, final = _solve(problem["start"], steps)
    if reverse:
        first = f"{name} has some {item}."
        ask = f"Now {name} has {final} {item}. How many {item} did {name} have at first?"
        inverse = [(_INVERSE[op], b) for op, b in reversed(steps)]
        lines, answer = _solve(final, inverse)
    else:
        first = f"{name} has {problem['start']} {item}."
        ask = f"How many {item} does {name} have now?"
        answer = final
    sentences = [first, *op_sentences, ask]
    if distraction:
        sentences.insert(1, distraction)
    return " ".join(sentences), "\n".join(lines + [f"#### {answer}"]), str(answer)


def solution_operations(solution: str) -> set[str]:
    """The operations a `synth_gsm` solution's step lines use ("a op b = c"), e.g. {"+", "*"}."""
    return {line.split()[1] for line in solution.splitlines() if not line.startswith("####")}


def _gsm_example(
    task: str, split: str, i: int, question: str, solution: str, answer: str, **extra
) -> dict:
    return dict(
        id=f"{task}-{split}-{i}",
        task=task,
        source=question,
        target=solution,
        answer=answer,
        **extra,
    )


def synth_gsm(split: str, cfg: SynthConfig, seed: int = 0) -> list[dict]:
    """Problems for one split; train excludes every question that appears in validation or test."""
    sizes = {"train": cfg.n_train_gsm, "validation": cfg.n_val_gsm, "test": cfg.n_test_gsm}
    problems = _gsm_problems(split, cfg, seed, sizes[split])
    if split == "train":
        held_out = {
            render_gsm(p)[0]
            for s in ("validation", "test")
            for p in _gsm_problems(s, cfg, seed, sizes[s])
        }
        problems = [p for p in problems if render_gsm(p)[0] not in held_out]
    return [_gsm_example("synth_gsm", split, i, *render_gsm(p)) for i, p in enumerate(problems)]


def _gsm_problems(split: str, cfg: SynthConfig, seed: int, n: int) -> list[dict]:
    rng = random.Random(f"synth_gsm/{seed}/{split}")  # str seeds are stable across processes
    return [_random_problem(rng, cfg) for _ in range(n)]


def _perturb(
    problem: dict, kind: str, rng: random.Random, cfg: SynthConfig
) -> tuple[str, str, str]:
    if kind == "numerical substitution":  # same operations, new numbers
        new = _random_problem(rng, cfg, n_steps=len(problem["steps"]))
        for _ in range(100):
            if [op for op, _ in new["steps"]] == [op for op, _ in problem["steps"]]:
                return render_gsm({**problem, "start": new["start"], "steps": new["steps"]})
            new = _random_problem(rng, cfg, n_steps=len(problem["steps"]))
        return render_gsm(
            {**problem, "start": new["start"], "steps": new["steps"], "phrasing": new["phrasing"]}
        )
    if kind == "digit expansion":  # one more digit in the start value and every +/- operand
        steps = [(op, b * 10 if op in "+-" else b) for op, b in problem["steps"]]
        return render_gsm({**problem, "start": problem["start"] * 10, "steps": steps})
    if kind == "distraction insertion":  # an irrelevant fact about someone else
        other = rng.choice([n for n in NAMES if n != problem["name"]])
        fact = f"{other} has {rng.randint(2, cfg.max_value)} {rng.choice(ITEMS)}."
        return render_gsm(problem, distraction=fact)
    if kind == "adding operation":
        _, value = _solve(problem["start"], problem["steps"])
        step = _pick_step(rng, value, SynthConfig(**{**cfg.__dict__, "operations": "+-"}))
        return render_gsm(
            {**problem, "steps": [*problem["steps"], step], "phrasing": [*problem["phrasing"], 0]}
        )
    if kind == "reversing operation":
        return render_gsm(problem, reverse=True)
    raise ValueError(f"unknown perturbation {kind!r}; valid: {', '.join(PERTURBATIONS)}")


def synth_gsm_plus(split: str, cfg: SynthConfig, seed: int = 0, n_seeds: int = 300) -> list[dict]:
    """GSM-Plus twin: `n_seeds` synth_gsm test problems x 5 perturbations (like GSM-Plus
    testmini)."""
    if split != "test":
        raise ValueError("synth_gsm_plus has only a 'test' split (it is for evaluation)")
    rng = random.Random(f"synth_gsm_plus/{seed}")
    seeds = _gsm_problems("test", cfg, seed, cfg.n_test_gsm)[:n_seeds]
    out = []
    for s, problem in enumerate(seeds):
        for kind in PERTURBATIONS:
            question, solution, answer = _perturb(problem, kind, rng, cfg)
            out.append(
                _gsm_example(
                    "synth_gsm_plus",
                    split,
                    len(out),
                    question,
                    solution,
                    answer,
                    perturbation_type=kind,
                    seed_id=f"synth_gsm-test-{s}",
                )
            )
    return out


# ---------------------------------------------------------------------------- synth_summ
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TIMES = ["9 am", "10 am", "noon", "2 pm", "4 pm", "6 pm", "7 pm", "8 pm"]
COUNTS = ["two", "three", "four", "five", "six"]
_TOPICS = [
    dict(
        topic="restaurant booking",
        slots=dict(
            place=["Luigi's", "the Golden Dragon", "Blue Harbor", "Cafe Rosa"],
            day=DAYS,
            time=TIMES,
            size=COUNTS,
        ),
        turns=[
            "I'd like to book a table at {place}, please.",
            "Of course. For which day?",
            "{day}, at {time}.",
            "How many people will come?",
            "We are {size}.",
            "Fine, the table is booked.",
        ],
        summaries=[
            "#Person1# books a table for {size} at {place} on {day} at {time}.",
            "#Person1# reserves a table at {place} for {size} people on {day} at {time}.",
            "#Person2# helps #Person1# book a table at {place} on {day} at {time}.",
        ],
    ),
    dict(
        topic="doctor appointment",
        slots=dict(
            problem=["a headache", "a sore throat", "a bad cough", "back pain"],
            day=DAYS,
            time=TIMES,
        ),
        turns=[
            "I need to see the doctor. I have {problem}.",
            "I am sorry to hear that. When can you come?",
            "Is {day} possible?",
            "Yes, the doctor is free on {day} at {time}.",
            "That works for me.",
            "Good, I have written you down.",
        ],
        summaries=[
            "#Person1# has {problem} and makes an appointment with the doctor on {day} at {time}.",
            "#Person1# will see the doctor on {day} at {time} because of {problem}.",
            "#Person2# gives #Person1#, who has {problem}, an appointment on {day} at {time}.",
        ],
    ),
    dict(
        topic="shopping",
        slots=dict(
            item=["a jacket", "a lamp", "a backpack", "a pair of shoes"],
            color=["red", "blue", "black", "green"],
            price=["20", "35", "50", "80"],
        ),
        turns=[
            "Excuse me, I am looking for {item}.",
            "We have some over here. Which color do you like?",
            "I prefer {color}.",
            "This {color} one costs {price} dollars.",
            "I will take it.",
            "Great choice.",
        ],
        summaries=[
            "#Person1# buys {item} in {color} for {price} dollars.",
            "#Person1# chooses a {color} one when buying {item}, which costs {price} dollars.",
            "#Person2# sells #Person1# {item} in {color} for {price} dollars.",
        ],
    ),
    dict(
        topic="travel",
        slots=dict(
            city=["Paris", "Rome", "Berlin", "Madrid", "Vienna"],
            day=DAYS,
            transport=["train", "bus", "plane"],
        ),
        turns=[
            "I want to travel to {city}.",
            "When do you want to leave?",
            "On {day}.",
            "Would you like to go by {transport}?",
            "Yes, the {transport} is fine.",
            "Here is your ticket.",
        ],
        summaries=[
            "#Person1# buys a ticket to travel to {city} by {transport} on {day}.",
            "#Person1# will go to {city} on {day} by {transport}.",
            "#Person2# sells #Person1# a {transport} ticket to {city} for {day}.",
        ],
    ),
    dict(
        topic="job interview",
        slots=dict(
            job=["teacher", "driver", "designer", "nurse", "cook"],
            company=["Acme", "Northwind", "Globex", "Initech"],
            day=DAYS,
        ),
        turns=[
            "Thank you for coming to {company}. Why do you want to be a {job}?",
            "I have always liked this kind of work.",
            "Do you have experience as a {job}?",
            "Yes, I worked as a {job} for years.",
            "Good. Can you start on {day}?",
            "Yes, {day} is fine.",
        ],
        summaries=[
            "#Person2# has an interview at {company} for a job as a {job} and can start on {day}.",
            "#Person1# interviews #Person2# for the {job} job at {company}; #Person2# can start on "
            "{day}.",
            "#Person2# wants to work as a {job} at {company} and will start on {day}.",
        ],
    ),
    dict(
        topic="lost item",
        slots=dict(
            thing=["my wallet", "my keys", "my phone", "my umbrella"],
            place=["the park", "the bus", "the library", "the office"],
        ),
        turns=[
            "I think I lost {thing}.",
            "Where did you last see it?",
            "In {place}, this morning.",
            "Let us go back to {place} and look.",
            "Good idea.",
            "I hope we find it.",
        ],
        summaries=[
            "#Person1# lost {thing} in {place} and they will go back to look for it.",
            "#Person1# thinks {thing} was left in {place}, so they return there.",
            "#Person2# helps #Person1# look for {thing} in {place}.",
        ],
    ),
]
_SMALL_TALK = [
    ("Hello, how are you?", "Fine, thanks. And you?"),
    ("Nice weather today.", "Yes, it is very sunny."),
    ("Thank you very much.", "You are welcome."),
    ("Sorry, I am a bit late.", "No problem at all."),
    ("It is busy today.", "Yes, many people are here."),
    ("Have a nice day.", "You too, goodbye."),
]


# the slots a renegotiation may change (`SynthConfig.summ_rejections`), as a proposal names them
_NEGOTIABLE = {
    "day": "{}",
    "time": "{}",
    "city": "{}",
    "transport": "the {}",
    "color": "{}",
    "price": "{} dollars",
}
_PROPOSE = ["What about {}?", "How about {}?", "Could we do {}?", "Maybe {}?"]
_TURN_DOWN = [
    "No, {} is bad for me.",
    "Sorry, {} does not work.",
    "{} is not possible, I am afraid.",
]
_ACCEPT = ["Yes, {} is perfect.", "{} works for me.", "Fine, {} it is."]
_LOOK_BACK = ["Good, that is better than {}.", "Much better than {}, thanks."]


def _renegotiation(
    rng: random.Random, spec: dict, slots: dict, most: int
) -> tuple[list[str], dict | None]:
    """Turns that go back on one agreed slot: it is turned down, up to `most` proposals are
    turned down too, one is accepted, and half the time a turned-down value is named last. Updates
    `slots` to the accepted value. Whoever spoke last does not matter: the summary follows what
    was accepted, not what was said last (what makes it harder than copying). Also returns the
    slot, its accepted value and its turned-down values (the one agreed first, then the turned-down
    proposals), which `renegotiation_outcome` reads."""
    names = [name for name in spec["slots"] if name in _NEGOTIABLE]
    if not names:
        return [], None
    name = rng.choice(names)
    shown = _NEGOTIABLE[name].format
    agreed = slots[name]
    others = [v for v in spec["slots"][name] if v != agreed]
    proposals = rng.sample(others, min(len(others), 1 + rng.randint(0, most)))
    *turned_down, accepted = proposals
    turns = [_sentence(rng.choice(_TURN_DOWN), shown(agreed))]
    for value in turned_down:
        turns.append(_sentence(rng.choice(_PROPOSE), shown(value)))
        turns.append(_sentence(rng.choice(_TURN_DOWN), shown(value)))
    turns.append(_sentence(rng.choice(_PROPOSE), shown(accepted)))
    turns.append(_sentence(rng.choice(_ACCEPT), shown(accepted)))
    if rng.random() < 0.5:
        turns.append(_sentence(rng.choice(_LOOK_BACK), shown(rng.choice([agreed, *turned_down]))))
    slots[name] = accepted
    return turns, dict(slot=name, accepted=accepted, turned_down=[agreed, *turned_down])


def _names(text: str, value: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text, flags=re.IGNORECASE) is not None


def renegotiation_outcome(example: dict, response: str) -> str | None:
    """Which value of the renegotiated slot a summary names: "accepted" (only the value finally
    accepted), "first_agreed" (only the value agreed before the renegotiation: it was ignored),
    "turned_down" (a value proposed and turned down, and not the accepted one), "both" (the
    accepted value and a turned-down one) or "neither"; None for a dialogue without a
    renegotiation. ROUGE-L barely sees one wrong word; this counts the skill itself."""
    detail = example.get("renegotiation")
    if detail is None:
        return None
    first, *proposed = detail["turned_down"]
    if _names(response, detail["accepted"]):
        return "both" if any(_names(response, v) for v in detail["turned_down"]) else "accepted"
    if any(_names(response, value) for value in proposed):
        return "turned_down"
    return "first_agreed" if _names(response, first) else "neither"


def _sentence(template: str, value: str) -> str:
    text = template.format(value)
    return text[0].upper() + text[1:]


def _dialogue(rng: random.Random, cfg: SynthConfig) -> tuple[str, list[str], str, dict | None]:
    spec = rng.choice(_TOPICS)
    slots = {k: rng.choice(v) for k, v in spec["slots"].items()}
    turns = [t.format(**slots) for t in spec["turns"]]
    renegotiation = None
    if cfg.summ_rejections:  # drawn only then: the original twin stays the same, draw for draw
        more, renegotiation = _renegotiation(rng, spec, slots, cfg.summ_rejections)
        turns += more
    n_turns = rng.randint(cfg.min_turns, cfg.max_turns)
    extra = rng.sample(_SMALL_TALK, min(len(_SMALL_TALK), max(0, (n_turns - len(turns)) // 2)))
    greeting = [x for x in extra if x[0].startswith("Hello")]
    before = greeting + [x for x in extra if x not in greeting and rng.random() < 0.5]
    after = [x for x in extra if x not in before]
    pairs = [p for pair in before for p in pair] + turns + [p for pair in after for p in pair]
    text = "\n".join(f"#Person{1 + (i % 2)}#: {t}" for i, t in enumerate(pairs))
    return text, [s.format(**slots) for s in spec["summaries"]], spec["topic"], renegotiation


def synth_summ(split: str, cfg: SynthConfig, seed: int = 0) -> list[dict]:
    """Dialogues for one split. Train has one (randomly phrased) summary; validation and test carry
    all three reference summaries, the first being the target."""
    sizes = {"train": cfg.n_train_summ, "validation": cfg.n_val_summ, "test": cfg.n_test_summ}
    rng = random.Random(f"synth_summ/{seed}/{split}")
    out = []
    for i in range(sizes[split]):
        dialogue, summaries, topic, renegotiation = _dialogue(rng, cfg)
        if split == "train":
            summaries = [summaries[rng.randrange(len(summaries))]]
        example = dict(
            id=f"synth_summ-{split}-{i}",
            task="synth_summ",
            source=dialogue,
            target=summaries[0],
            references=summaries,
            topic=topic,
        )
        if renegotiation is not None:  # the original twin's examples stay as they were
            example["renegotiation"] = renegotiation
        out.append(example)
    return out


if __name__ == "__main__":
    task, split, n = sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 3
    for example in {
        "synth_gsm": synth_gsm,
        "synth_gsm_plus": synth_gsm_plus,
        "synth_summ": synth_summ,
    }[task](split, SynthConfig())[:n]:
        print(example, "\n")
