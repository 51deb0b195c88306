"""Task metrics: GSM final-answer accuracy and ROUGE-L, both on a 0-100 scale.

python -m adaswitch_lib.metrics "so she has 1,234 left. #### 1,234"    # prints the extracted answer
"""

from __future__ import annotations

import re
import sys
from fractions import Fraction
from functools import lru_cache

# A number as GSM solutions (and models) write it: a sign before or after a dollar sign ("-$5",
# "$-5"), thousands commas, a decimal part, a decimal without its leading zero (".5"), or a
# fraction.
_NUMBER = re.compile(r"(?:-\$?|\$-?)?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:/\d[\d,]*)?")


def parse_number(text: str) -> Fraction | None:
    """'$1,234.50' -> Fraction(2469, 2); '72.0' == '72'; '1/4' -> Fraction(1, 4); else None."""
    cleaned = text.strip().replace("\u2212", "-").replace(",", "").replace("$", "").rstrip(".")
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def extract_answer(text: str) -> Fraction | None:
    """The final answer of a GSM solution: the number right after '####' if there is one, else the
    last number in the text. Returns None when the text names no number."""
    text = text.replace("\u2212", "-")  # a typographic minus sign
    if "####" in text:
        match = _NUMBER.match(text.split("####", 1)[1].lstrip())
        if match:
            return parse_number(match.group())
    numbers = _NUMBER.findall(text)
    return parse_number(numbers[-1]) if numbers else None


def names_no_number(text: str) -> bool:
    """True when a response gives no final number (the right reply to a question lacking a
    premise)."""
    return extract_answer(text) is None


def gsm_correct(prediction: str, answer: str | None) -> bool:
    """Is the prediction's final answer the gold one? An answer of None means the question has no
    answer (GSM-Plus 'critical thinking'): correct only if the prediction names no number."""
    if answer is None:
        return names_no_number(prediction)
    predicted = extract_answer(prediction)
    return predicted is not None and predicted == parse_number(answer)


def gsm_accuracy(predictions: list[str], answers: list[str | None]) -> float:
    """Accuracy x 100 (see `gsm_correct`)."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
    if not predictions:
        return float("nan")
    return 100.0 * sum(gsm_correct(p, a) for p, a in zip(predictions, answers)) / len(predictions)


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, references: list[str] | str) -> float:
    """ROUGE-L F1 x 100 with stemming; with several references, the best one counts."""
    if isinstance(references, str):
        references = [references]
    return 100.0 * _rouge_scorer().score_multi(references, prediction)["rougeL"].fmeasure


def mean_rouge_l(predictions: list[str], references: list[list[str]]) -> float:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference sets")
    if not predictions:
        return float("nan")
    return sum(rouge_l(p, r) for p, r in zip(predictions, references)) / len(predictions)


if __name__ == "__main__":
    print(extract_answer(" ".join(sys.argv[1:])))
