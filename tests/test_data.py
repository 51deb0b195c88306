import dataclasses
import itertools
import json
import re
from fractions import Fraction

import pytest
from rouge_score import rouge_scorer

from adaswitch_lib import metrics
from adaswitch_lib.config import SynthConfig
from adaswitch_lib.data import format_completion, format_prompt, load_task, score, tokenize_prompts
from adaswitch_lib.errors import DataUnavailableError
from adaswitch_lib.synth import PERTURBATIONS

SMALL = SynthConfig(
    n_train_gsm=300, n_val_gsm=50, n_test_gsm=60, n_train_summ=200, n_val_summ=30, n_test_summ=30
)


def read_jsonl(path):
    return [json.loads(line) for line in open(path)]


# ---------------------------------------------------------------- answer extraction on real data
def test_answer_extraction_on_every_gsm8k_test_answer(shared_data):
    rows = read_jsonl(shared_data / "gsm8k" / "test.jsonl")
    assert len(rows) == 1319
    for row in rows:
        gold = row["answer"].split("####")[-1].strip()
        assert metrics.extract_answer(row["answer"]) == Fraction(gold.replace(",", "")), row[
            "answer"
        ]
    # and the solution text scored against its own answers is 100 % accurate
    examples = load_task("gsm8k", "test", path=shared_data / "gsm8k" / "test.jsonl")
    assert score("gsm8k", [e["target"] for e in examples], examples) == 100.0


def test_answer_extraction_on_gsm_plus_testmini(shared_data):
    rows = read_jsonl(shared_data / "gsm-plus" / "gsmplus_testmini.jsonl")
    answered = [r for r in rows if r["answer"] != "None"]
    assert len(answered) == 2100
    for row in answered:
        assert metrics.extract_answer(row["solution"]) == metrics.parse_number(row["answer"]), row[
            "solution"
        ][-80:]


def test_extraction_rules():
    assert metrics.extract_answer("It costs $1,234.") == 1234
    assert metrics.extract_answer("#### 72.0") == metrics.extract_answer("so 72") == 72
    # '####' wins over the last number
    assert metrics.extract_answer("first 3 then #### 5 and later 9") == 5
    # '####' without a number: last number
    assert metrics.extract_answer("no #### here but 12 and 14") == 14
    assert metrics.extract_answer("#### 1/4") == Fraction(1, 4) == metrics.parse_number("0.25")
    assert metrics.extract_answer("I cannot tell.") is None


@pytest.mark.parametrize(
    "text,value",
    [
        ("#### .5", Fraction(1, 2)),  # a decimal without its leading zero
        ("so she has .75 of a pie left", Fraction(3, 4)),
        ("the change is -.25", Fraction(-1, 4)),
        ("#### -$5", -5),
        ("a loss of $-5 in total", -5),  # the sign before or after the dollar sign
        ("pay $.50 each", Fraction(1, 2)),
        ("the answer is \u22127", -7),  # a typographic minus sign
        ("The answer is 12.", 12),  # a full stop after the number
        ("#### 1,234.50", Fraction(2469, 2)),
        ("#### 3 apples", 3),
        ("she spent 50% of it, #### 40", 40),
    ],
)
def test_extraction_of_number_spellings_models_write(text, value):
    assert metrics.extract_answer(text) == value


def test_per_example_correctness_matches_accuracy():
    predictions, answers = (
        ["#### .5", "#### 0.50", "#### 2", "no number", "#### 7"],
        ["0.5", "1/2", "3", None, None],
    )
    assert [metrics.gsm_correct(p, a) for p, a in zip(predictions, answers)] == [
        True,
        True,
        False,
        True,
        False,
    ]
    assert metrics.gsm_accuracy(predictions, answers) == 60.0
    assert metrics.gsm_accuracy(["#### 7", "#### 8", "no idea"], ["7", "9", None]) == pytest.approx(
        200 / 3
    )


# ---------------------------------------------------------------- local files map every column
def test_local_gsm8k_files_and_paper_split(shared_data):
    train_file = shared_data / "gsm8k" / "train.jsonl"
    train, val = (
        load_task("gsm8k", "train", path=train_file),
        load_task("gsm8k", "validation", path=train_file),
    )
    assert (len(train), len(val)) == (7000, 473)
    assert not {e["source"] for e in train} & {e["source"] for e in val}
    kd = load_task("gsm8k", "kd", path=train_file)
    assert len(kd) == 1000 and {e["source"] for e in kd} <= {e["source"] for e in train}
    assert [e["id"] for e in kd] == [e["id"] for e in load_task("gsm8k", "kd", path=train_file)]
    raw = read_jsonl(train_file)
    by_question = {r["question"]: r for r in raw}
    for e in train[:50]:
        assert e["target"] == by_question[e["source"]]["answer"]
        assert Fraction(e["answer"]) == metrics.extract_answer(e["target"])


def test_local_dialogsum_files(shared_data):
    test = load_task("dialogsum", "test", path=shared_data / "dialogsum" / "dialogsum.test.jsonl")
    dev = load_task(
        "dialogsum", "validation", path=shared_data / "dialogsum" / "dialogsum.dev.jsonl"
    )
    assert len(test) == len(dev) == 500
    assert all(len(e["references"]) == 3 for e in test) and all(
        len(e["references"]) == 1 for e in dev
    )
    raw = read_jsonl(shared_data / "dialogsum" / "dialogsum.test.jsonl")[0]
    assert test[0]["source"] == raw["dialogue"] and test[0]["references"] == [
        raw["summary1"],
        raw["summary2"],
        raw["summary3"],
    ]
    assert test[0]["target"] == raw["summary1"] and test[0]["topic"] == raw["topic1"]


def test_dialogsum_hub_shape_groups_references(tmp_path):
    """The Hub copy repeats each test dialogue once per reference; it becomes one example."""
    rows = [
        dict(
            id=f"test_0_{k}",
            dialogue="#Person1#: Hi.\n#Person2#: Hello.",
            summary=f"summary {k}",
            topic="greeting",
        )
        for k in (1, 2, 3)
    ] + [dict(id="test_1_1", dialogue="#Person1#: Bye.", summary="they part", topic="farewell")]
    path = tmp_path / "dialogsum_test.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    examples = load_task("dialogsum", "test", path=path)
    assert [e["references"] for e in examples] == [
        ["summary 1", "summary 2", "summary 3"],
        ["they part"],
    ]


def test_local_gsm_plus_and_critical_thinking_rule(shared_data):
    path = shared_data / "gsm-plus" / "gsmplus_testmini.jsonl"
    excluded = load_task("gsm_plus", "test", path=path)
    kept = load_task("gsm_plus", "test", path=path, critical_thinking="no_number")
    assert (len(excluded), len(kept)) == (2100, 2400)
    critical = [e for e in kept if e["answer"] is None]
    assert len(critical) == 300 and {e["perturbation_type"] for e in critical} == {
        "critical thinking"
    }
    assert len({e["perturbation_type"] for e in excluded}) == 7
    # under 'no_number', a reply naming no number is right and a made-up number is wrong
    assert score("gsm_plus", ["The question lacks information.", "#### 12"], critical[:2]) == 50.0


def test_parquet_and_json_files_load_too(tmp_path, shared_data):
    import pandas as pd

    frame = pd.read_json(shared_data / "gsm8k" / "test.jsonl", lines=True).head(20)
    frame.to_parquet(tmp_path / "test.parquet")
    frame.to_json(tmp_path / "test.json", orient="records")
    a = load_task("gsm8k", "test", path=tmp_path / "test.parquet")
    b = load_task("gsm8k", "test", path=tmp_path / "test.json")
    assert a == b and len(a) == 20


# ---------------------------------------------------------------- ROUGE-L on real text
def test_rouge_l_on_dialogsum(shared_data):
    rows = read_jsonl(shared_data / "dialogsum" / "dialogsum.dev.jsonl")
    a, b = rows[0]["summary"], rows[1]["summary"]
    assert metrics.rouge_l(a, a) == pytest.approx(100.0)
    assert metrics.rouge_l(b, a) < 40.0
    direct = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(a, b)["rougeL"].fmeasure
    assert metrics.rouge_l(b, a) == pytest.approx(100 * direct)
    assert metrics.rouge_l(b, [a, b]) == pytest.approx(100.0)  # best over several references


# ---------------------------------------------------------------- offline twins
@pytest.mark.parametrize(
    "task, split",
    [
        ("synth_gsm", "train"),
        ("synth_gsm", "test"),
        ("synth_gsm_plus", "test"),
        ("synth_summ", "validation"),
        ("synth_summ", "kd"),
    ],
)
def test_twins_are_deterministic(task, split):
    first = load_task(task, split, synth_config=SMALL, n_kd=40)
    assert first == load_task(task, split, synth_config=SMALL, n_kd=40)
    assert len({e["id"] for e in first}) == len(first) > 0


def test_twins_share_the_real_schema(shared_data):
    real_gsm = load_task("gsm8k", "test", path=shared_data / "gsm8k" / "test.jsonl")[0]
    real_plus = load_task(
        "gsm_plus", "test", path=shared_data / "gsm-plus" / "gsmplus_testmini.jsonl"
    )[0]
    real_summ = load_task(
        "dialogsum", "test", path=shared_data / "dialogsum" / "dialogsum.test.jsonl"
    )[0]
    assert set(load_task("synth_gsm", "test", synth_config=SMALL)[0]) == set(real_gsm)
    assert set(load_task("synth_gsm_plus", "test", synth_config=SMALL)[0]) - {"seed_id"} == set(
        real_plus
    )
    assert set(load_task("synth_summ", "test", synth_config=SMALL)[0]) == set(real_summ)


def _recompute(solution: str) -> int:
    """Redo every 'a op b = c' line; each line must start from the previous result."""
    lines = solution.split("\n")
    assert lines[-1].startswith("#### ")
    value = None
    for line in lines[:-1]:
        a, op, b, eq, c = line.split()
        a, b, c = int(a), int(b), int(c)
        assert eq == "=" and (value is None or a == value), line
        assert c == {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op] and (
            op != "/" or a % b == 0
        ), line
        value = c
    assert int(lines[-1][5:]) == value
    return value


@pytest.mark.parametrize("task", ["synth_gsm", "synth_gsm_plus"])
def test_every_synthetic_answer_agrees_with_its_solution(task):
    examples = load_task(task, "test", synth_config=SynthConfig(n_test_gsm=1319))
    for e in examples:
        assert str(_recompute(e["target"])) == e["answer"]
        numbers = [int(x) for x in re.findall(r"\d+", e["target"])]
        assert min(numbers) >= 0
    if task == "synth_gsm_plus":
        assert {e["perturbation_type"] for e in examples} == set(PERTURBATIONS) and len(
            examples
        ) == 1500


def test_synthetic_gsm_splits_are_disjoint_and_sized_like_gsm8k():
    cfg = SynthConfig()
    test = {e["source"] for e in load_task("synth_gsm", "test", synth_config=cfg)}
    val = {e["source"] for e in load_task("synth_gsm", "validation", synth_config=cfg)}
    train = load_task("synth_gsm", "train", synth_config=cfg)
    assert len(test) > 1200 and len(val) > 440 and len(train) > 6500
    assert not {e["source"] for e in train} & (test | val)


def test_difficulty_knobs_change_the_problems():
    easy = load_task(
        "synth_gsm", "test", synth_config=SynthConfig(min_steps=2, max_steps=2, operations="+")
    )
    hard = load_task(
        "synth_gsm", "test", synth_config=SynthConfig(min_steps=4, max_steps=4, max_operand=40)
    )
    assert all(e["target"].count("\n") == 2 and " - " not in e["target"] for e in easy)
    assert all(e["target"].count("\n") == 4 for e in hard)
    long = load_task("synth_summ", "test", synth_config=SynthConfig(min_turns=12, max_turns=14))
    short = load_task("synth_summ", "test", synth_config=SynthConfig(min_turns=6, max_turns=6))
    assert min(e["source"].count("\n") for e in long) > max(e["source"].count("\n") for e in short)


def test_a_renegotiated_slot_is_summarised_as_finally_accepted():
    """`summ_rejections`: the summary names the value that was accepted, never one turned down,
    though a turned-down value may be the last one said; 0 draws the original twin."""
    from adaswitch_lib import synth

    harder = dataclasses.replace(SMALL, summ_rejections=3)
    test = load_task("synth_summ", "test", synth_config=harder)
    renegotiated = 0
    for example in test:
        lines = [line.split(": ", 1)[1] for line in example["source"].splitlines()]
        proposed = _values(lines, synth._PROPOSE)  # "That works for me." accepts no proposal
        accepted = [value for value in _values(lines, synth._ACCEPT) if value in proposed]
        turned_down = _values(lines, synth._TURN_DOWN)
        references = [r.lower() for r in example["references"]]
        if not accepted:
            assert not turned_down and example["topic"] == "lost item"
            continue
        renegotiated += 1
        (value,) = accepted
        assert all(value in r for r in references), (value, references)
        assert 1 <= len(turned_down) <= 1 + 3  # the agreed value and up to 3 proposals
        assert all(gone != value and all(gone not in r for r in references) for gone in turned_down)
    assert renegotiated >= len(test) // 2
    # the original twin is unchanged, draw for draw
    assert load_task("synth_summ", "test", synth_config=SMALL) == load_task(
        "synth_summ", "test", synth_config=dataclasses.replace(SMALL, summ_rejections=0)
    )


def test_the_renegotiation_outcome_says_which_value_a_summary_names():
    """`renegotiation_outcome` reads the values the dialogue itself accepted and turned down, and
    sorts real references and summaries edited to name another value."""
    from adaswitch_lib import synth
    from adaswitch_lib.synth import renegotiation_outcome

    harder = dataclasses.replace(SMALL, summ_rejections=3)
    seen = set()
    for example in load_task("synth_summ", "test", synth_config=harder):
        detail = example.get("renegotiation")
        if detail is None:
            assert renegotiation_outcome(example, example["target"]) is None
            continue
        lines = [line.split(": ", 1)[1] for line in example["source"].splitlines()]
        proposed = _values(lines, synth._PROPOSE)
        assert [v for v in _values(lines, synth._ACCEPT) if v in proposed] == [
            detail["accepted"].lower()
        ]
        assert all(renegotiation_outcome(example, r) == "accepted" for r in example["references"])
        target, accepted = example["target"], detail["accepted"]
        first, *later = detail["turned_down"]
        assert renegotiation_outcome(example, target.replace(accepted, first)) == "first_agreed"
        if later:
            edited = target.replace(accepted, later[-1])
            assert renegotiation_outcome(example, edited) == "turned_down"
            seen.add("turned_down")
        assert renegotiation_outcome(example, f"{target} Not {first}.") == "both"
        assert renegotiation_outcome(example, "#Person1# talks to #Person2#.") == "neither"
        seen.add("renegotiated")
    assert seen == {"renegotiated", "turned_down"}
    # the original twin's examples carry nothing new
    original = load_task("synth_summ", "test", synth_config=SMALL)
    assert not any("renegotiation" in example for example in original)


def _values(lines: list[str], templates: list[str]) -> list[str]:
    """The slot values that one-value sentence templates were filled with in `lines`, lower case,
    as a summary names them (without "the" and "dollars")."""
    out = []
    for line, template in itertools.product(lines, templates):
        head, tail = template.lower().split("{}")
        text = line.lower()
        if text.startswith(head) and text.endswith(tail) and len(text) > len(head + tail):
            out.append(
                text[len(head) : len(text) - len(tail)]
                .removeprefix("the ")
                .removesuffix(" dollars")
            )
    return out


def test_synthetic_summaries_score_like_real_ones():
    test = load_task("synth_summ", "test", synth_config=SMALL)
    assert score("synth_summ", [e["target"] for e in test], test) == pytest.approx(100.0)
    shifted = [e["target"] for e in test[1:] + test[:1]]
    assert score("synth_summ", shifted, test) < 80.0
    assert all(len(e["references"]) == 3 for e in test)


# ---------------------------------------------------------------- prompts and errors
def test_prompt_templates(shared_data):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    example = load_task("gsm8k", "test", path=shared_data / "gsm8k" / "test.jsonl")[0]
    assert format_prompt(example) == f"Question: {example['source']}\nAnswer:"
    assert format_completion(example) == " " + example["target"]
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    )
    with pytest.raises(ValueError, match="chat template"):
        format_prompt(example, style="chat", tokenizer=tok)
    tok.chat_template = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"
    )
    chat = format_prompt(example, style="chat", tokenizer=tok)
    assert (
        chat.startswith("<|user|>Solve the math problem")
        and example["source"] in chat
        and chat.endswith("<|assistant|>")
    )


def test_hub_unreachable_gives_one_clear_line(monkeypatch):
    monkeypatch.setattr("adaswitch_lib.data.hub_unreachable", lambda: True)
    with pytest.raises(DataUnavailableError) as info:
        load_task("dialogsum", "test")
    message = str(info.value)
    assert (
        "knkarthick/dialogsum" in message
        and "unreachable" in message
        and "synth_summ" in message
        and "path=" in message
    )
    assert "\n" not in message


def test_bad_task_split_and_file():
    with pytest.raises(ValueError, match="unknown task 'gsm'; valid names"):
        load_task("gsm", "test")
    with pytest.raises(ValueError, match="unknown split of gsm_plus 'train'; valid names: test"):
        load_task("gsm_plus", "train")
    with pytest.raises(DataUnavailableError, match="not found"):
        load_task("gsm8k", "test", path="/nonexistent/test.jsonl")


def _real_tokenizer(shared_data, name):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(shared_data / "tokenizers" / name)


@pytest.mark.parametrize(
    "name, style",
    [("llama-3.2-base", "plain"), ("qwen2.5-base", "plain"), ("qwen2.5-instruct", "chat")],
)
def test_long_prompts_keep_their_header_and_end(shared_data, capsys, name, style):
    """GSM8K test prompts over the paper's 128 tokens lose their middle, never their start: BOS
    once (Llama), "Question:" or the chat template's header, and the end ("Answer:", or the
    assistant's turn for -Instruct)."""
    tokenizer = _real_tokenizer(shared_data, name)
    examples = load_task("gsm8k", "test", path=shared_data / "gsm8k" / "test.jsonl")
    ids = tokenize_prompts(tokenizer, examples, 128, style)
    whole = tokenize_prompts(tokenizer, examples, 10**6, style)
    long = [i for i, w in enumerate(whole) if len(w) > 128]
    assert long and all(len(p) <= 128 for p in ids)
    assert (
        f"data: {len(long)} of {len(examples)} prompts over 128 tokens" in capsys.readouterr().out
    )
    for i in long:
        text = tokenizer.decode(ids[i])
        full = tokenizer.decode(whole[i])
        assert len(ids[i]) == 128 and ids[i][:8] == whole[i][:8] and ids[i][-8:] == whole[i][-8:]
        assert text.startswith(full[:20]) and text.endswith(full[-20:])
        if tokenizer.bos_token_id is not None and style == "plain":
            assert ids[i].count(tokenizer.bos_token_id) == 1 and ids[i][0] == tokenizer.bos_token_id
    short = [i for i, w in enumerate(whole) if len(w) <= 128]
    assert all(ids[i] == whole[i] for i in short)  # prompts that fit are untouched
    end = "<|im_start|>assistant\n" if style == "chat" else "Answer:"
    assert all(tokenizer.decode(ids[i]).endswith(end) for i in long)


# (tokenizer, prompt style, the prompt's first ids, its last ids, the EOS that ends a response):
# the special ids are the models' own (Qwen2.5: <|im_start|> 151644, <|im_end|> 151645,
# <|endoftext|> 151643; Llama-3: <|begin_of_text|> 128000, <|start_header_id|> 128006,
# <|end_header_id|> 128007, <|eot_id|> 128009, <|end_of_text|> 128001)
GSM8K_PROMPT_IDS = [
    ("qwen2.5-base", "plain", [14582, 25], [16141, 25], 151643),  # "Question:" ... "Answer:"
    ("qwen2.5-instruct", "chat", [151644], [151645, 198, 151644, 77091, 198], 151645),
    ("llama-3.2-base", "plain", [128000, 14924, 25], [16533, 25], 128001),
    ("llama-3.2-instruct", "chat", [128000, 128006], [128009, 128006, 78191, 128007, 271], 128009),
]


@pytest.mark.parametrize("name, style, first, last, eos", GSM8K_PROMPT_IDS)
def test_a_gsm8k_prompt_as_token_ids_under_each_family_and_variant(
    shared_data, name, style, first, last, eos
):
    """The first GSM8K test question as the kit tokenizes it for training and scoring: Llama's BOS
    exactly once, the -Instruct prompts ending in the assistant's header, every response ending in
    the variant's own EOS."""
    from adaswitch_lib.data import tokenize_pairs

    tokenizer = _real_tokenizer(shared_data, name)
    example = load_task("gsm8k", "test", path=shared_data / "gsm8k" / "test.jsonl")[:1]
    ((prompt, response),) = tokenize_pairs(tokenizer, example, 128, 512, style)
    assert prompt[: len(first)] == first and prompt[-len(last) :] == last
    assert prompt.count(128000) == (1 if name.startswith("llama") else 0)
    assert "Janet’s ducks lay 16 eggs per day" in tokenizer.decode(prompt)
    assert response[-1] == eos and response.count(eos) == 1
    assert tokenizer.decode(response[:-1]).strip().endswith("#### 18")


def test_the_examples_command_prints_a_harder_twin_and_takes_only_its_knobs(capsys):
    from adaswitch_lib.data import main

    main(["synth_summ", "test", "-n", "40", "--set", "synth.summ_rejections=3"])
    harder = capsys.readouterr().out
    assert "What about" in harder or "How about" in harder  # proposals of a renegotiation
    main(["synth_summ", "test", "-n", "40"])
    plain_twin = capsys.readouterr().out
    assert "What about" not in plain_twin and "How about" not in plain_twin
    with pytest.raises(SystemExit):
        main(["synth_summ", "test", "--set", "kd_steps=3"])
    assert "synth.FIELD=VALUE" in capsys.readouterr().err
