"""Train the default ``batch_inference`` model: snakepit_bridge/models/sentiment.npz.

A multinomial logistic regression (negative / neutral / positive) over the
hashed text features of ``snakepit_bridge.models.linear.features``, trained by
full-batch gradient descent from zero weights on the small labelled corpus
below. Deterministic: no random numbers, fixed iteration count, and the
archive is written with fixed zip timestamps so the same numpy produces the
same bytes.

    .venv/bin/python tools/train_default_model.py [--out PATH]
"""
from __future__ import annotations

import argparse
import io
import itertools
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from snakepit_bridge.models import DEFAULT_MODEL_PATH  # noqa: E402
from snakepit_bridge.models.linear import features, load_model  # noqa: E402

LABELS = ("negative", "neutral", "positive")
DIM = 1 << 14
ITERATIONS = 400
LEARNING_RATE = 2.0
L2 = 1e-4

POSITIVE = """
I love this product, it works perfectly
This is great, really great
Absolutely wonderful experience, highly recommended
The service was excellent and the staff were friendly
Best purchase I have made all year
I am very happy with the results
Fantastic quality and fast delivery
What a brilliant idea, well done
The movie was amazing and the acting superb
Everything went smoothly, thank you so much
Outstanding support, they solved my problem quickly
I really enjoyed the concert last night
Such a beautiful place, we had a lovely time
This library is awesome and easy to use
Great job team, the release is solid
The food was delicious and the portions generous
I'm thrilled with how this turned out
Super helpful and very kind people
Five stars, would buy again
It exceeded my expectations in every way
The new update is fast and reliable
A delightful book, I could not put it down
Nice work, this looks good
Love it, love it, love it
Works like a charm
The hotel was clean, comfortable and perfect
Good value for money and great performance
Impressive results, I am pleased
The kids loved it and so did we
Happy customer here, everything is fine and good
""".strip().splitlines()

NEGATIVE = """
I hate this product, it broke after one day
This is terrible, really terrible
Absolutely awful experience, do not buy
The service was horrible and the staff were rude
Worst purchase I have made all year
I am very unhappy with the results
Poor quality and slow delivery
What a stupid idea, badly done
The movie was boring and the acting dreadful
Everything went wrong, what a disaster
Useless support, they never answered my emails
I really regret going to the concert last night
Such a dirty place, we had a miserable time
This library is buggy and painful to use
Bad job, the release is broken
The food was disgusting and cold
I'm furious about how this turned out
Unhelpful and very rude people
One star, a complete waste of money
It failed my expectations in every way
The new update is slow and crashes constantly
A dull book, I gave up after ten pages
Not good, this looks bad
Hate it, hate it, hate it
Does not work at all
The hotel was filthy, noisy and awful
Overpriced garbage with terrible performance
Disappointing results, I am angry
The kids hated it and so did we
Angry customer here, everything is broken and bad
""".strip().splitlines()

NEUTRAL = """
The package arrived on Tuesday
The meeting is scheduled for three o'clock
This product comes in blue and grey
The store opens at nine in the morning
I bought it last week from the shop downtown
The report has twelve pages and two tables
The train leaves from platform four
Please send the invoice to the accounting department
The manual describes the installation steps
The file contains the data for March
We will discuss the budget tomorrow
The building is located next to the station
The library was updated to version two
The box weighs about three kilograms
The conference takes place in Berlin
It is a laptop with a fifteen inch screen
The order number is written on the receipt
The recipe uses flour, eggs and milk
The museum is closed on Mondays
The function returns a list of strings
He works as an engineer in the city
The weather forecast mentions clouds later today
The form asks for a name and an address
The car is parked in the garage
The course starts in September
I read the article about the election
The table has four legs and a drawer
The server runs on port eight thousand
She moved to a new apartment in May
The document was printed on Friday
The delivery took two days
The event was held in the main hall
The meeting was moved to Thursday
The price was listed in euros
The parcel was delivered on Monday
The time was ten past four
""".strip().splitlines()

# A few templated sentences so single adjectives carry weight on their own.
_POS_ADJ = ["good", "great", "excellent", "amazing", "wonderful", "fantastic", "perfect", "awesome", "nice", "lovely"]
_NEG_ADJ = ["bad", "terrible", "awful", "horrible", "poor", "broken", "useless", "disappointing", "dreadful", "worst"]
_NOUNS = ["product", "service", "app", "movie", "meal", "support", "update"]


def corpus() -> tuple[list[str], np.ndarray]:
    texts: list[str] = []
    ys: list[int] = []
    for label, lines in ((0, NEGATIVE), (1, NEUTRAL), (2, POSITIVE)):
        texts += lines
        ys += [label] * len(lines)
    for adj, noun in itertools.product(_POS_ADJ, _NOUNS[:3]):
        texts.append(f"the {noun} is {adj}")
        ys.append(2)
    for adj, noun in itertools.product(_NEG_ADJ, _NOUNS[:3]):
        texts.append(f"the {noun} is {adj}")
        ys.append(0)
    for adj, noun in itertools.product(_POS_ADJ[:5], _NOUNS[3:]):
        texts.append(f"the {noun} was not {adj}")
        ys.append(0)
    for noun in _NOUNS:
        texts.append(f"the {noun} is available")
        ys.append(1)
    return texts, np.asarray(ys)


def train() -> tuple[np.ndarray, np.ndarray, float]:
    texts, y = corpus()
    x = np.zeros((len(texts), DIM))
    for i, t in enumerate(texts):
        idx, vals = features(t, DIM)
        x[i, idx] = vals
    onehot = np.eye(len(LABELS))[y]
    w = np.zeros((len(LABELS), DIM))
    b = np.zeros(len(LABELS))
    for _ in range(ITERATIONS):
        logits = x @ w.T + b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        grad = (p - onehot) / len(texts)
        w -= LEARNING_RATE * (grad.T @ x + L2 * w)
        b -= LEARNING_RATE * grad.sum(axis=0)
    accuracy = float(np.mean(np.argmax(x @ w.T + b, axis=1) == y))
    return w.astype(np.float32), b.astype(np.float32), accuracy


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed`` but with fixed timestamps (reproducible bytes)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL_PATH)
    out = parser.parse_args().out
    w, b, accuracy = train()
    write_npz(out, {"kind": np.array("hashed_text_v1"), "weights": w, "bias": b, "labels": np.array(LABELS)})
    model = load_model(out)
    print(f"wrote {out} ({out.stat().st_size} bytes), training accuracy {accuracy:.3f}", file=sys.stderr)
    for text in ("I love it, this is great", "terrible, I hate it", "The package arrived on Tuesday"):
        label, conf, _ = model.predict(text)
        print(f"  {text!r}: {label} ({conf:.2f})", file=sys.stderr)


if __name__ == "__main__":
    main()
