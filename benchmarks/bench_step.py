"""One distillation step of each method, side by side: seconds per step, split into sampling /
teacher scoring / student update, and the ratio to on-policy.

    python benchmarks/bench_step.py                          # random-init pair, TRL's GKD shape
    python benchmarks/bench_step.py --prepared .cache/models/cpu/tiny-qwen-synth_gsm-XXXX --task
    synth_gsm
    python benchmarks/bench_step.py --teacher-shape 36,2048,16,2,11008 --student-shape
    24,896,14,2,4864 \
        --vocab 151936 --teacher-dtype bfloat16 --batch 8 --steps 4 --repeats 1   # Qwen2.5-3B/0.5B
        shapes, GPU

Default shape: teacher 4x256 (4.2 M parameters), student 2x128 (0.6 M), vocab 426, batch 16 x 64
new tokens, fp32, 2 threads: the shape at which TRL 1.16's GKDTrainer took 0.34 s per on-policy
step on these machines. With random weights no row ends early (no EOS) and nothing switches
unless K is small; `--prepared` uses a trained pair and real prompts instead. Every method runs
`distill.distill` itself, so the numbers are what a run pays. Methods alternate (A B B A ...) and
the first steps of each repeat are warm-up; medians over the rest. `--teacher-attention auto,eager`
times each method with the teacher's attention as a run has it (SDPA) and with eager, side by side.

`--trl` (with `--prepared`; `pip install ".[bench]"`) adds a column for TRL's `GKDTrainer` on the
same pair, prompts, batch and response limit, fully on-policy (lmbda = 1) with forward KL
(beta = 0) at the student's temperature, in turns with the kit's methods: a TRL step is its
`training_step` (generation, both models' forward, the loss, the backward) and the optimiser step.
Rows stop at EOS in both, so the table also gives the time per generated token: the same work.

    python benchmarks/bench_step.py --prepared .cache/models/cpu/tiny-qwen-synth_gsm-XXXX --trl \
        --methods on_policy --teacher-dtype bfloat16 --repeats 4 """

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adaswitch_lib.config import RunConfig, TinyShape, get_profile  # noqa: E402
from adaswitch_lib.distill import distill  # noqa: E402


class _Tokenizer:
    """Just what the loop asks of a tokenizer, for a random-init pair without one."""

    def __init__(self, vocab):
        self.vocab, self.pad_token_id, self.eos_token_id = vocab, 0, None

    def __len__(self):
        return self.vocab


def random_pair(vocab: int, teacher_shape: TinyShape, student_shape: TinyShape):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    def make(shape, seed):
        torch.manual_seed(seed)
        return Qwen2ForCausalLM(
            Qwen2Config(
                vocab_size=vocab,
                hidden_size=shape.hidden,
                num_hidden_layers=shape.layers,
                num_attention_heads=shape.heads,
                num_key_value_heads=shape.kv_heads,
                intermediate_size=shape.intermediate,
                max_position_embeddings=512,
                tie_word_embeddings=True,
            )
        )

    return make(teacher_shape, 1), make(student_shape, 2), _Tokenizer(vocab)


class TRLSteps:
    """TRL's GKDTrainer on the kit's pair: `steps(n)` runs n training steps on the kit's prompts
    and returns one log entry per step, as `distill` logs them."""

    def __init__(self, teacher, student, tokenizer, pairs, batch: int, new_tokens: int, lr: float):
        from datasets import Dataset
        from trl.experimental.gkd import GKDConfig, GKDTrainer

        config = GKDConfig(
            output_dir=str(Path("/tmp") / "bench_step_trl"),
            per_device_train_batch_size=batch,
            lmbda=1.0,  # on-policy: every step samples the student
            beta=0.0,  # forward KL, as the kit's on-policy
            temperature=0.5,  # the student's sampling temperature in the kit (paper 3.3)
            max_new_tokens=new_tokens,
            learning_rate=lr,
            report_to=[],
            use_cpu=not torch.cuda.is_available(),
            bf16=False,  # the student trains in fp32 in the kit's cpu runs (and one process holds
            fp16=False,  # one accelerate state: TRL's default bf16 would clash with the kit's)
            save_strategy="no",
            logging_steps=10**6,
            disable_tqdm=True,
        )
        self.prompts = [prompt for prompt, _ in pairs]
        dataset = Dataset.from_dict({"input_ids": self.prompts[:batch]})
        self.trainer = GKDTrainer(
            model=student,
            teacher_model=teacher,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            data_collator=lambda rows: rows,  # the batches are built here
        )
        self.trainer.create_optimizer_and_scheduler(num_training_steps=10**6)
        self.trainer.current_gradient_accumulation_steps = 1  # Trainer sets it inside train()
        self.batch, self.pad, self.next = batch, tokenizer.pad_token_id, 0

    def _inputs(self) -> dict:
        rows = [self.prompts[(self.next + i) % len(self.prompts)] for i in range(self.batch)]
        self.next += self.batch
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.pad)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):  # left-padded, as generate wants
            ids[i, width - len(row) :], mask[i, width - len(row) :] = torch.tensor(row), 1
        device = self.trainer.model.device
        ids, mask = ids.to(device), mask.to(device)
        return dict(
            prompts=ids,
            prompt_attention_mask=mask,
            input_ids=ids.clone(),
            attention_mask=mask.clone(),
            labels=ids.clone(),
        )

    def steps(self, n: int) -> list[dict]:
        trainer, log = self.trainer, []
        for _ in range(n):
            inputs = self._inputs()
            start = time.perf_counter()
            trainer.model.train()
            trainer.training_step(trainer.model, inputs)
            trainer.optimizer.step()
            trainer.lr_scheduler.step()
            trainer.optimizer.zero_grad()
            seconds = time.perf_counter() - start
            generated = (inputs["labels"] != -100).sum(-1).float()  # labels past the prompt
            log.append(
                dict(seconds=dict(step=seconds), mean_response_length=float(generated.mean()))
            )
        return log


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", help="a prepared pair's folder (default: a random-init pair)")
    parser.add_argument("--task", default="synth_gsm", help="the prepared pair's task")
    parser.add_argument("--methods", default="on_policy,off_policy,skd,adaswitch")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument(
        "--steps", type=int, default=6, help="steps per repeat (the first is warm-up)"
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--K", type=float, default=3.0)
    parser.add_argument("--L", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--teacher-dtype", default="float32", help="the frozen teacher's dtype: float32 or bfloat16"
    )
    parser.add_argument(
        "--teacher-continuation",
        default="exact",
        help="AdaSwitch after the switch: exact or speculative",
    )
    parser.add_argument(
        "--mixed-precision", default="no", help="accelerate's mixed_precision: no, bf16, fp16"
    )
    parser.add_argument(
        "--teacher-shape",
        help="random-init teacher: layers,hidden,heads,kv_heads,intermediate "
        "(default: the cpu profile's)",
    )
    parser.add_argument("--student-shape", help="random-init student, likewise")
    parser.add_argument("--vocab", type=int, default=426, help="random-init pair's vocabulary")
    parser.add_argument(
        "--trl", action="store_true", help="add TRL GKDTrainer's on-policy step (needs --prepared)"
    )
    parser.add_argument(
        "--teacher-attention",
        default="auto",
        help="comma list, each variant timed side by side: auto (what a run uses: SDPA), sdpa, "
        "eager",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    profile = get_profile(
        "cpu",
        kd_batch_size=args.batch,
        eval_every_early=10**6,
        eval_every=10**6,
        log_every=10**6,
        kd_mixed_precision=args.mixed_precision,
    )
    if args.prepared:
        from adaswitch_lib.data import load_profile_task, tokenize_pairs
        from adaswitch_lib.prepare import load_prepared

        teacher, student, tokenizer = load_prepared(Path(args.prepared))
        max_prompt = (
            profile.max_prompt_tokens_gsm if "gsm" in args.task else profile.max_prompt_tokens_summ
        )
        pairs = tokenize_pairs(
            tokenizer, load_profile_task(profile, args.task, "kd"), max_prompt, args.new_tokens
        )
        shape = f"prepared {Path(args.prepared).name}"
    else:
        shapes = [
            TinyShape(*(int(x) for x in spec.split(","))) if spec else default
            for spec, default in (
                (args.teacher_shape, profile.teacher_shape),
                (args.student_shape, profile.student_shape),
            )
        ]
        teacher, student, tokenizer = random_pair(args.vocab, *shapes)
        g = torch.Generator().manual_seed(0)
        pairs = [
            (
                torch.randint(3, args.vocab, (int(n),), generator=g).tolist(),
                torch.randint(3, args.vocab, (args.new_tokens,), generator=g).tolist(),
            )
            for n in torch.randint(30, 60, (256,), generator=g)
        ]
        shape = (
            f"random-init {shapes[0].layers}x{shapes[0].hidden} -> "
            f"{shapes[1].layers}x{shapes[1].hidden}, "
            f"vocab {args.vocab}"
        )
    device = "cuda" if torch.cuda.is_available() else "cpu"  # where distill will put the teacher
    teacher = teacher.to(device=device, dtype=getattr(torch, args.teacher_dtype))
    attention = {"auto": teacher.config._attn_implementation, "sdpa": "sdpa", "eager": "eager"}
    state = {k: v.clone() for k, v in student.state_dict().items()}
    variants = [(m, a) for m in args.methods.split(",") for a in args.teacher_attention.split(",")]
    trl = None
    if args.trl:
        if not args.prepared:
            raise SystemExit("--trl needs --prepared: TRL's trainer needs the pair's tokenizer")
        trl = TRLSteps(
            teacher,
            copy.deepcopy(student),
            tokenizer,
            pairs,
            args.batch,
            args.new_tokens,
            profile.kd_lr,
        )
        variants.append(("trl_gkd", "auto"))
    order = [v for r in range(args.repeats) for v in (variants if r % 2 == 0 else variants[::-1])]
    per_method = {v: [] for v in variants}
    for method, attn in order:
        teacher.set_attn_implementation(attention[attn])
        if method == "trl_gkd":
            trl.trainer.model.load_state_dict(state)  # from the same student as the kit's
            per_method[(method, attn)] += trl.steps(args.steps)[1:]
            continue
        student.load_state_dict(state)  # every repeat starts from the same student
        run = RunConfig(
            profile=profile,
            pair="tiny-qwen",
            task=args.task,
            method=method,
            adaswitch_k=args.K,
            teacher_continuation=args.teacher_continuation,
            adaswitch_window=args.L,
        )
        out = distill(
            run,
            teacher,
            student,
            tokenizer,
            pairs,
            max_new_tokens=args.new_tokens,
            steps=args.steps,
        )
        per_method[(method, attn)] += out.log[1:]  # the first step of each repeat warms up
    print(
        f"{shape}; batch {args.batch} x {args.new_tokens} new tokens; {args.threads} threads; "
        f"teacher {args.teacher_dtype}, mixed precision {args.mixed_precision}, continuation "
        f"{args.teacher_continuation}; K={args.K}, L={args.L}; "
        f"medians over {args.repeats} x {args.steps - 1} steps"
    )
    base = statistics.median(
        sum(e["seconds"].values())
        for e in per_method.get(("on_policy", variants[0][1]), per_method[variants[0]])
    )
    print(
        "| method | teacher attention | s/step | / on-policy | sampling | teacher scoring | "
        "student update | tokens/row | ms / generated token | switch rate |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for method, attn in variants:
        log = per_method[(method, attn)]
        total = statistics.median(sum(e["seconds"].values()) for e in log)
        split = {k: statistics.median(e["seconds"][k] for e in log) for k in log[0]["seconds"]}
        parts = [
            f"{split[k]:.3f}" if k in split else "-"
            for k in ("sampling", "teacher_scoring", "student_update")
        ]
        switch = statistics.mean(e["switch_rate"] for e in log) if "switch_rate" in log[0] else None
        tokens = statistics.mean(e["mean_response_length"] for e in log)
        per_token = statistics.median(
            sum(e["seconds"].values()) / (e["mean_response_length"] * args.batch) for e in log
        )
        print(
            f"| {method} | {'-' if method == 'trl_gkd' else attention[attn]} | {total:.3f} | "
            f"{total / base:.2f}x | {' | '.join(parts)} | {tokens:.1f} | {per_token * 1000:.2f} | "
            f"{'-' if switch is None else f'{switch:.0%}'} |"
        )


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"({time.perf_counter() - start:.0f} s)")
