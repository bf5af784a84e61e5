"""`dlcourse similarity`: planted copies rank above every pair of honest answers.

Four students (ann, ben, cat, dan) answer chapter 7 independently, each in their own way
(closed form, staged backpropagation, loops, keepdims/einsum, a ones-vector mean); all four
are correct (checked against the answer key). Four more copy: eve renames every variable of
ann's answers, fay reorders ben's statements and functions and adds comments, gus renames the
instructor's solution cells, hal pastes the package's BatchNorm/Dropout code into the answer
cells. Every copy must be flagged (share >= FLAG_AT) and outrank every honest pair, honest
against honest and honest against the course's code alike; no honest student is flagged but for the pair a copier made
with them (ann and ben were copied from, so they share their copier's score).
"""
from __future__ import annotations

import json
import os

import nbformat
import numpy as np
import pytest

from test_grading_support import A, RELEASE, meta, new_course, run_dlcourse, submit

STUB = "    # YOUR CODE HERE\n    raise NotImplementedError()"

HONEST = {
    "ann": {
        "dropout_forward": """
    keep = 1.0 - p
    return np.where(mask, x / keep, 0.0)""",
        "dropout_backward": """
    scale = 1.0 / (1.0 - p)
    return grad_output * mask.astype(grad_output.dtype) * scale""",
        "batchnorm_forward": """
    n = x.shape[0]
    mu = np.sum(x, axis=0) / n
    centered = x - mu
    sigma2 = np.sum(centered ** 2, axis=0) / n
    normalized = centered / np.sqrt(sigma2 + eps)
    return normalized * gamma + beta""",
        "batchnorm_backward": """
    n = x.shape[0]
    mu = x.mean(0)
    xc = x - mu
    var = (xc ** 2).mean(0)
    std = np.sqrt(var + eps)
    xn = xc / std
    dbeta = grad_output.sum(0)
    dgamma = (grad_output * xn).sum(0)
    dxn = grad_output * gamma
    dxc = dxn / std
    dstd = -np.sum(dxn * xc / std ** 2, axis=0)
    dvar = 0.5 * dstd / std
    dxc = dxc + 2.0 * xc * dvar / n
    dmu = np.sum(dxc, axis=0)
    dx = dxc - dmu / n
    return dx, dgamma, dbeta""",
    },
    "ben": {
        "dropout_forward": """
    out = np.zeros_like(x)
    out[mask] = x[mask] / (1 - p)
    return out""",
        "dropout_backward": """
    grad = np.zeros_like(grad_output)
    grad[mask] = grad_output[mask]
    return grad / (1 - p)""",
        "batchnorm_forward": """
    y = np.empty_like(x)
    for j in range(x.shape[1]):
        column = x[:, j]
        m = column.mean()
        s = np.sqrt(((column - m) ** 2).mean() + eps)
        y[:, j] = gamma[j] * (column - m) / s + beta[j]
    return y""",
        "batchnorm_backward": """
    N = len(x)
    ivar = 1.0 / np.sqrt(x.var(axis=0) + eps)
    xhat = (x - x.mean(axis=0)) * ivar
    dxhat = grad_output * gamma
    dx = (ivar / N) * (N * dxhat - dxhat.sum(axis=0) - xhat * (dxhat * xhat).sum(axis=0))
    return dx, (grad_output * xhat).sum(axis=0), grad_output.sum(axis=0)""",
    },
    "cat": {
        "dropout_forward": """
    return np.multiply(x, mask) * (1.0 / (1.0 - p))""",
        "dropout_backward": """
    factor = 1 / (1 - p)
    return factor * np.multiply(grad_output, mask)""",
        "batchnorm_forward": """
    stats_mean = np.mean(x, axis=0, keepdims=True)
    stats_var = np.mean(np.square(x - stats_mean), axis=0, keepdims=True)
    inv = (stats_var + eps) ** -0.5
    return (x - stats_mean) * inv * gamma.reshape(1, -1) + beta.reshape(1, -1)""",
        "batchnorm_backward": """
    centered = x - np.mean(x, axis=0, keepdims=True)
    inv = (np.mean(centered ** 2, axis=0, keepdims=True) + eps) ** -0.5
    normed = centered * inv
    upstream = grad_output * gamma
    through_var = normed * np.mean(upstream * normed, axis=0, keepdims=True)
    dx = inv * (upstream - np.mean(upstream, axis=0, keepdims=True) - through_var)
    return dx, np.einsum("nd,nd->d", grad_output, normed), np.einsum("nd->d", grad_output)""",
    },
    "dan": {
        "dropout_forward": """
    y = x.copy()
    y[~mask] = 0
    y /= (1 - p)
    return y""",
        "dropout_backward": """
    return np.where(mask, grad_output, 0) / (1 - p)""",
        "batchnorm_forward": """
    ones = np.ones(x.shape[0])
    average = ones @ x / len(ones)
    spread = ones @ (x - average) ** 2 / len(ones)
    return gamma * (x - average) / np.sqrt(spread + eps) + beta""",
        "batchnorm_backward": """
    count = x.shape[0]
    average = x.mean(axis=0)
    sd = np.sqrt(((x - average) ** 2).mean(axis=0) + eps)
    z = (x - average) / sd
    dz = grad_output * gamma
    dsigma = (dz * z).sum(axis=0)
    dmean = dz.sum(axis=0)
    dx = (dz - (dmean + z * dsigma) / count) / sd
    dgamma = np.add.reduce(z * grad_output)
    return dx, dgamma, np.add.reduce(grad_output)""",
    },
}

# eve: ann's answers, every local name renamed
EVE = {
    "dropout_forward": """
    retain = 1.0 - p
    return np.where(mask, x / retain, 0.0)""",
    "dropout_backward": """
    factor = 1.0 / (1.0 - p)
    return grad_output * mask.astype(grad_output.dtype) * factor""",
    "batchnorm_forward": """
    size = x.shape[0]
    average = np.sum(x, axis=0) / size
    shifted = x - average
    variance = np.sum(shifted ** 2, axis=0) / size
    unit = shifted / np.sqrt(variance + eps)
    return unit * gamma + beta""",
    "batchnorm_backward": """
    size = x.shape[0]
    average = x.mean(0)
    shifted = x - average
    variance = (shifted ** 2).mean(0)
    deviation = np.sqrt(variance + eps)
    unit = shifted / deviation
    grad_beta = grad_output.sum(0)
    grad_gamma = (grad_output * unit).sum(0)
    grad_unit = grad_output * gamma
    grad_shifted = grad_unit / deviation
    grad_deviation = -np.sum(grad_unit * shifted / deviation ** 2, axis=0)
    grad_variance = 0.5 * grad_deviation / deviation
    grad_shifted = grad_shifted + 2.0 * shifted * grad_variance / size
    grad_average = np.sum(grad_shifted, axis=0)
    grad_x = grad_shifted - grad_average / size
    return grad_x, grad_gamma, grad_beta""",
}

# fay: ben's answers, independent statements swapped and comments added
FAY = {
    "dropout_forward": """
    # keep only the surviving units, scaled up
    out = np.zeros_like(x)
    out[mask] = x[mask] / (1 - p)
    return out""",
    "dropout_backward": """
    grad = np.zeros_like(grad_output)
    grad[mask] = grad_output[mask]  # the gradient flows where the unit was kept
    return grad / (1 - p)""",
    "batchnorm_forward": """
    y = np.empty_like(x)
    for j in range(x.shape[1]):
        # one feature at a time
        column = x[:, j]
        m = column.mean()
        s = np.sqrt(((column - m) ** 2).mean() + eps)
        y[:, j] = gamma[j] * (column - m) / s + beta[j]
    return y""",
    "batchnorm_backward": """
    dxhat = grad_output * gamma
    ivar = 1.0 / np.sqrt(x.var(axis=0) + eps)
    N = len(x)
    xhat = (x - x.mean(axis=0)) * ivar
    # the closed form of the input gradient
    dx = (ivar / N) * (N * dxhat - dxhat.sum(axis=0) - xhat * (dxhat * xhat).sum(axis=0))
    return dx, (grad_output * xhat).sum(axis=0), grad_output.sum(axis=0)""",
}

# gus: the instructor's solution cells, renamed
GUS = {
    "dropout_forward": """
    return x * mask / (1 - p)""",
    "dropout_backward": """
    return grad_output * mask / (1 - p)""",
    "batchnorm_forward": """
    mu = x.mean(axis=0)
    sigma2 = x.var(axis=0)
    normalized = (x - mu) / np.sqrt(sigma2 + eps)
    return gamma * normalized + beta""",
    "batchnorm_backward": """
    mu = x.mean(axis=0)
    scale = 1 / np.sqrt(x.var(axis=0) + eps)
    normalized = (x - mu) * scale
    grad_gamma = (grad_output * normalized).sum(axis=0)
    grad_beta = grad_output.sum(axis=0)
    upstream = grad_output * gamma
    grad_x = scale * (upstream - upstream.mean(axis=0) - normalized * (upstream * normalized).mean(axis=0))
    return grad_x, grad_gamma, grad_beta""",
}

# hal: dlcourse.nn's BatchNorm1d (its _normalize, _mean_of_product, _affine and
# _normalized_input_backward inlined) and Dropout, pasted and adapted
HAL = {
    "dropout_forward": """
    scale = 0.0 if p == 1 else 1.0 / (1 - p)
    scaled_mask = (mask * scale).astype(x.dtype)
    return x * scaled_mask""",
    "dropout_backward": """
    scale = 0.0 if p == 1 else 1.0 / (1 - p)
    scaled_mask = (mask * scale).astype(grad_output.dtype)
    return grad_output * scaled_mask""",
    "batchnorm_forward": """
    import math
    axes = (0,) + tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    x_hat = x - mean
    letters = "abcdefghijklmnop"[:x_hat.ndim]
    kept = "".join(letter for axis, letter in enumerate(letters) if axis not in axes)
    total = np.einsum(f"{letters},{letters}->{kept}", x_hat, x_hat)
    count = math.prod(x_hat.shape[axis] for axis in axes)
    var = (total / count).reshape([1 if axis in axes else n for axis, n in enumerate(x_hat.shape)])
    inv_std = 1 / np.sqrt(var + eps)
    x_hat *= inv_std
    y = x_hat * gamma
    y += beta
    return y""",
    "batchnorm_backward": """
    import math
    axes = (0,) + tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    x_hat = x - mean
    letters = "abcdefghijklmnop"[:x_hat.ndim]
    kept = "".join(letter for axis, letter in enumerate(letters) if axis not in axes)
    total = np.einsum(f"{letters},{letters}->{kept}", x_hat, x_hat)
    count = math.prod(x_hat.shape[axis] for axis in axes)
    var = (total / count).reshape([1 if axis in axes else n for axis, n in enumerate(x_hat.shape)])
    inv_std = 1 / np.sqrt(var + eps)
    x_hat *= inv_std
    total = np.einsum(f"{letters},{letters}->{kept}", grad_output, x_hat)
    dgamma = (total / count).reshape(-1) * (x_hat.size // x_hat.shape[1])
    dbeta = grad_output.sum(axis=axes)
    grad_x_hat = grad_output * gamma.astype(x_hat.dtype, copy=False).reshape(inv_std.shape)
    grad = grad_x_hat - grad_x_hat.mean(axis=axes, keepdims=True)
    total = np.einsum(f"{letters},{letters}->{kept}", grad_x_hat, x_hat)
    grad -= x_hat * (total / count).reshape([1 if axis in axes else n for axis, n in enumerate(x_hat.shape)])
    grad *= inv_std
    return grad, dgamma, dbeta""",
}

# jay and kim dilute a copy: cat's answers and gus's renamed solution, each handed in with a
# cell of their own exploration code about four times the size of the answers, so that
# only about a fifth of the copier's code is copied (the copied side is still all there). Both
# hand in the same cell, so they also match each other.
PADDING = """
def describe_batch(batch, name="batch"):
    counts = {}
    for row in batch:
        key = round(float(np.mean(row)), 1)
        counts[key] = counts.get(key, 0) + 1
    widest = max(len(str(k)) for k in counts) if counts else 0
    lines = [f"{name}: {len(batch)} rows"]
    for key in sorted(counts):
        lines.append(str(key).rjust(widest) + " | " + "#" * counts[key])
    return "\\n".join(lines)


def learning_rate_schedule(epoch, base=0.1, warmup=5, decay=0.5, every=10):
    if epoch < warmup:
        return base * (epoch + 1) / warmup
    steps = (epoch - warmup) // every
    return base * decay ** steps


def moving_average(values, window=5):
    smoothed, total, queue = [], 0.0, []
    for value in values:
        queue.append(value)
        total += value
        if len(queue) > window:
            total -= queue.pop(0)
        smoothed.append(total / len(queue))
    return smoothed


def confusion_counts(predicted, actual, classes=10):
    table = [[0] * classes for _ in range(classes)]
    for guess, truth in zip(predicted, actual):
        table[int(truth)][int(guess)] += 1
    correct = sum(table[k][k] for k in range(classes))
    return table, correct / max(1, len(actual))


def split_indices(count, fractions=(0.8, 0.1, 0.1), seed=0):
    order = list(range(count))
    state = seed
    for position in range(count - 1, 0, -1):
        state = (1103515245 * state + 12345) % 2 ** 31
        other = state % (position + 1)
        order[position], order[other] = order[other], order[position]
    first = int(fractions[0] * count)
    second = first + int(fractions[1] * count)
    return order[:first], order[first:second], order[second:]


def report_run(history, title="run"):
    best_epoch = min(range(len(history)), key=lambda k: history[k]["val_loss"])
    header = f"{title}: best epoch {best_epoch} of {len(history)}"
    rows = [f"{k:3d}  train {h['loss']:.4f}  val {h['val_loss']:.4f}" for k, h in enumerate(history)]
    return "\\n".join([header, "-" * len(header)] + rows)
"""

COPIES = {"eve": ("eve", "ann"), "fay": ("fay", "ben"), "gus": ("gus", "course: solutions/"),
          "hal": ("hal", "course: the dlcourse package"), "jay": ("jay", "cat"),
          "kim": ("kim", "course: solutions/")}


def notebook_with(answers: dict, order=None) -> nbformat.NotebookNode:
    """The released notebook with each answer cell's stub replaced by a body."""
    notebook = nbformat.read(RELEASE, as_version=4)
    for cell in notebook.cells:
        name = meta(cell).get("grade_id")
        if meta(cell).get("solution") and cell.cell_type == "code":
            assert STUB in cell.source, name
            cell.source = cell.source.replace(STUB, answers[name].strip("\n"))
    if order:   # move the answer cells (with their tests) into another order, as a reordering copier might
        cells = {meta(c).get("grade_id"): c for c in notebook.cells}
        slots = [i for i, c in enumerate(notebook.cells) if meta(c).get("grade_id") in order]
        for slot, name in zip(slots, order):
            notebook.cells[slot] = cells[name]
    return notebook


def answer_functions(answers: dict) -> dict:
    namespace = {"np": np}
    for name, body in answers.items():
        args = {"dropout_forward": "x, p, mask", "dropout_backward": "grad_output, p, mask",
                "batchnorm_forward": "x, gamma, beta, eps", "batchnorm_backward": "grad_output, x, gamma, eps"}[name]
        exec(f"def {name}({args}):{body}", namespace)
    return namespace


@pytest.mark.parametrize("student", ["ann", "ben", "cat", "dan", "eve", "fay", "gus", "hal"])
def test_every_planted_answer_is_correct(student):
    """Honest or copied, every answer set is right: copies are not caught for being wrong."""
    from dlcourse.answers import ch07 as key

    answers = {**HONEST, "eve": EVE, "fay": FAY, "gus": GUS, "hal": HAL}[student]
    functions = answer_functions(answers)
    rng = np.random.default_rng(7)
    x, g = rng.standard_normal((9, 4)), rng.standard_normal((9, 4))
    gamma, beta, mask = rng.standard_normal(4), rng.standard_normal(4), rng.random((9, 4)) < 0.6
    np.testing.assert_allclose(functions["dropout_forward"](x, 0.4, mask), key.dropout_forward_reference(x, 0.4, mask))
    np.testing.assert_allclose(functions["dropout_backward"](g, 0.4, mask), key.dropout_backward_reference(g, 0.4, mask))
    np.testing.assert_allclose(functions["batchnorm_forward"](x, gamma, beta, 1e-5),
                               key.batchnorm_forward_reference(x, gamma, beta, 1e-5), atol=1e-12)
    for got, want in zip(functions["batchnorm_backward"](g, x, gamma, 1e-5),
                         key.batchnorm_backward_reference(g, x, gamma, 1e-5)):
        np.testing.assert_allclose(got, want, atol=1e-12)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from dlcourse.grading.similarity import similarity_report

    course = new_course(tmp_path_factory.mktemp("similarity"))
    for student, answers in HONEST.items():
        submit(course, student, notebook_with(answers))
    submit(course, "eve", notebook_with(EVE))
    submit(course, "fay", notebook_with(FAY, order=["batchnorm_forward", "batchnorm_forward_tests", "dropout_forward",
                                                    "dropout_forward_tests", "batchnorm_backward",
                                                    "batchnorm_backward_tests", "dropout_backward",
                                                    "dropout_backward_tests"]))
    submit(course, "gus", notebook_with(GUS))
    for copier, answers in (("jay", HONEST["cat"]), ("kim", GUS)):
        padded = notebook_with(answers)
        padded.cells.append(nbformat.v4.new_code_cell(PADDING))
        submit(course, copier, padded)
    hostile = notebook_with(HAL)
    hostile.cells.append(nbformat.v4.new_code_cell("# </pre><script>alert('x')</script>"))
    submit(course, "hal", hostile)
    # a lone surrogate, which JSON's \\u escapes allow and UTF-8 cannot encode, in a cell of lou's own
    odd = nbformat.read(RELEASE, as_version=4)
    odd.cells.append(nbformat.v4.new_code_cell(PADDING + "# \\ud800"))
    submit(course, "lou", raw=json.dumps(odd).replace("\\\\ud800", "\\ud800").encode())
    os.symlink(course / "submitted" / "ann", course / "submitted" / "ivy")    # never followed
    os.symlink(course / "submitted" / "ann", os.path.join(os.fsencode(course / "submitted"), b"n\xffx"))  # not a name
    return course, similarity_report(course, A)


def pair_score(matches, student: str, other_prefix: str) -> float:
    scores = [m.score for m in matches if {m.student.label, m.other.label} & {student}
              and any(label.startswith(other_prefix) for label in (m.student.label, m.other.label) if label != student)]
    return max(scores, default=0.0)


def test_planted_copies_rank_above_every_honest_pair(report):
    from dlcourse.grading.similarity import FLAG_AT

    _, found = report
    honest = set(HONEST)
    honest_pairs = [m for m in found.matches if m.student.label in honest
                    and (m.other.label in honest or m.other.kind == "course")]
    worst_honest = max(m.score for m in honest_pairs)
    described = ", ".join(f"{m.student.label}~{m.other.label} {m.score:.2f}" for m in honest_pairs[:4])
    for student, (copier, origin) in COPIES.items():
        score = pair_score(found.matches, copier, origin)
        assert score >= FLAG_AT, f"{copier} copied from {origin} but scores only {score:.2f}"
        assert score > worst_honest, f"{copier} ({score:.2f}) does not outrank the honest pairs: {described}"
    copied_from = {origin: copier for copier, origin in COPIES.values()}
    for student in honest:
        entry = found.scores[student]
        assert entry["similarity"] < FLAG_AT or entry["closest"] == copied_from.get(student), (student, entry)
    for copier, _ in COPIES.values():
        assert found.scores[copier]["similarity"] >= FLAG_AT, (copier, found.scores[copier])
    # the padded copies are caught by the copied side: their own share alone stays under the flag
    [diluted] = [m for m in found.matches if {m.student.label, m.other.label} == {"cat", "jay"}]
    assert (diluted.student_share if diluted.student.label == "jay" else diluted.other_share) < FLAG_AT
    [diluted] = [m for m in found.matches if m.student.label == "kim" and m.other.label.startswith("course: solutions/")]
    assert diluted.student_share < FLAG_AT <= diluted.other_share


def test_the_report_is_offline_escaped_and_skips_links(report):
    course, found = report
    page = found.path.read_text()
    assert found.path == course / "similarity" / A / "report.html"
    assert "<mark>" in page and "<script" not in page and "&lt;script&gt;" in page
    assert "http://" not in page and "https://" not in page
    assert "ivy" in found.skipped and "link" in found.skipped["ivy"] and "ivy" not in found.scores
    assert "not a student id" in found.skipped["submitted/n\\xffx"] and "submitted/n\\xffx" in page
    assert found.scores["lou"]["closest"] in ("jay", "kim") and "lou" in page   # compared and shown like anyone
    stored = json.loads((course / "similarity" / A / "scores.json").read_text())
    assert stored["eve"]["closest"] == "ann" and stored["eve"]["similarity"] >= 0.9


def test_export_gains_a_similarity_column(report, tmp_path):
    from nbgrader.api import Gradebook

    from dlcourse.grading.gradebook import course_settings, ensure_assignment

    course, found = report
    course_id, db_url = course_settings(course)
    source = nbformat.read(course / "solutions" / A / f"{A}.ipynb", as_version=4)
    ensure_assignment(course, A, A, source, db_url, course_id)
    with Gradebook(db_url, course_id) as gradebook:
        for student in ("eve", "cat", "zoe"):
            gradebook.update_or_create_student(student)
    completed = run_dlcourse(course, "export", "--csv", str(tmp_path / "grades.csv"), timeout=300)
    assert completed.returncode == 0, completed.stderr
    import csv
    rows = {r["student_id"]: r for r in csv.DictReader(open(tmp_path / "grades.csv", encoding="utf-8"))}
    assert float(rows["eve"]["similarity"]) == pytest.approx(found.scores["eve"]["similarity"])
    assert float(rows["cat"]["similarity"]) == pytest.approx(found.scores["cat"]["similarity"])
    assert rows["zoe"]["similarity"] == ""    # no submission, not compared


def test_the_command_prints_the_ranking(report):
    from dlcourse.grading.similarity import load_scores

    course, found = report
    completed = run_dlcourse(course, "similarity", A, timeout=300,
                             env={"PYTHONHASHSEED": "12345"})
    assert completed.returncode == 0, completed.stderr
    assert "similarity/" in completed.stdout and "eve" in completed.stdout
    # another process, another string-hash salt: the very same shares (the k-gram hashes are not Python's hash())
    assert load_scores(course, A) == {student: entry["similarity"] for student, entry in found.scores.items()}
    missing = run_dlcourse(course, "similarity", "no-such-assignment", timeout=120)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no assignment" in missing.stderr
