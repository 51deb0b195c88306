"""One rank of tests/test_sync.py: samples a rank-specific batch with every two-model sampler and
writes how often each model was called, and the tokens, to OUT/rank<R>.json.

    python -m torch.distributed.run --nproc-per-node 2 tests/ranks_worker.py OUT [--alone]

Rank 0's rows never stop before max_new_tokens; rank 1's rows end early (its EOS is a token they
write soon), so the ranks finish at different rounds. With --alone the samplers do not agree
(no `gather`): the counts then differ, which shows that the test can fail.
"""

import dataclasses
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import Qwen2Config, Qwen2ForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adaswitch_lib.data import left_pad  # noqa: E402
from adaswitch_lib.sampler import SamplerConfig, sample_targets  # noqa: E402

CASES = [
    ("student", {}),
    ("skd", {}),
    ("adaswitch", dict(teacher_continuation="exact")),
    ("adaswitch", dict(teacher_continuation="speculative")),
]


def model(layers, hidden, seed):
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=16,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=2 * hidden,
            max_position_embeddings=128,
        )
    ).eval()


def main():
    out_dir, alone = Path(sys.argv[1]), "--alone" in sys.argv
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    teacher, student = model(2, 64, 1), model(1, 32, 2)
    calls = {"student": 0, "teacher": 0}
    for name, m in (("student", student), ("teacher", teacher)):
        m.register_forward_pre_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))

    def gather(values):
        table = [torch.zeros_like(values) for _ in range(world)]
        dist.all_gather(table, values)
        return torch.stack(table)

    g = torch.Generator().manual_seed(100 + rank)
    ids, mask = left_pad(
        [torch.randint(3, 16, (int(n),), generator=g).tolist() for n in (3, 7, 5, 4)], 0
    )
    report = {}
    for method, extra in CASES:
        cfg = SamplerConfig(
            max_new_tokens=32,
            adaswitch_k=1.05,
            adaswitch_window=3,
            draft_chunk=4,
            pad_token_id=0,
            **extra,
        )
        noise = torch.rand(3, ids.shape[0], 32, generator=torch.Generator().manual_seed(7 + rank))
        # an EOS every row writes early; a row's tokens before its EOS do not depend on it
        if rank == 1:
            probe = sample_targets(method, student, teacher, ids, mask, cfg, noise=noise).responses

            def stop(token):  # the position where the last row would stop
                hits = (probe == token).float()
                return float(torch.where(hits.any(1), hits.argmax(1).float(), 99.0).max())

            cfg = dataclasses.replace(cfg, eos_token_id=min(range(3, 16), key=stop))
        # this rank on its own
        single = sample_targets(method, student, teacher, ids, mask, cfg, noise=noise)
        calls.update(student=0, teacher=0)
        synced = sample_targets(
            method, student, teacher, ids, mask, cfg, noise=noise, gather=None if alone else gather
        )
        key = f"{method}/{extra.get('teacher_continuation', '-')}"
        report[key] = dict(
            calls=dict(calls),
            lengths=synced.response_mask.sum(-1).tolist(),
            equal_to_alone=bool(
                torch.equal(
                    synced.responses * synced.response_mask, single.responses * single.response_mask
                )
            ),
        )
    (out_dir / f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
