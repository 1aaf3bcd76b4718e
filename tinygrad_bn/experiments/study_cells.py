"""One cell of the study: build the network a cell names, train it, measure what its question asks.

A cell is a flat dict of JSON values (see study.grid); ``run_cell(cell, data)`` is a pure
function of it: every random draw comes from generators seeded by the cell's seed, and the
kernels run on one thread, so a cell gives the same numbers in any process.
"""

import numpy as np

from .. import functional as F
from .. import nn, optim
from ..tensor import Tensor, manual_seed, no_grad
from .runner import evaluate, train_run

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}
# |pre-activation| beyond which a unit counts as saturated: sigmoid'(4) = 0.018 (the issue's
# threshold); tanh(x) = 2 sigmoid(2x) - 1, so |x| > 2 is the same point of the curve
SATURATION = {"sigmoid": 4.0, "tanh": 2.0}
NORMS = ("none", "batchnorm", "batchrenorm", "layernorm", "groupnorm")
GROUPS = 10  # GroupNorm groups of a 100-wide layer: 10 features per group


def norm_available(norm):
    """LayerNorm and GroupNorm come from nn; a build without them skips those cells."""
    return {"layernorm": "LayerNorm", "groupnorm": "GroupNorm"}.get(norm, "Module") in dir(nn)


def _norm_layer(kind, cell, width):
    if kind == "batchnorm":
        return nn.BatchNorm1d(width, momentum=cell.get("momentum", 0.1))
    if kind == "batchrenorm":
        steps = cell["steps"]
        return nn.BatchRenorm1d(
            width,
            momentum=cell["momentum"],
            r_max=cell["r_max"],
            d_max=cell["d_max"],
            warmup_steps=int(cell["warmup"] * steps),
            r_max_steps=int(cell["r_max_at"] * steps),
            d_max_steps=int(cell["d_max_at"] * steps),
        )
    if kind == "layernorm":
        return nn.LayerNorm(width)
    if kind == "groupnorm":
        return nn.GroupNorm(GROUPS, width)
    raise ValueError(f"study: unknown norm {kind!r}")


def _mlp(widths, activation, norm, generator, cell=None, init_std=None, dropout=0.0, drop_rng=None):
    """784 -> widths... -> 10: Linear, [norm], activation, [dropout] per hidden layer.

    Linear layers take PyTorch's default init from `generator`, or N(0, init_std^2) weights and
    zero biases (Figure 1's init) when init_std is given. Before a normalization the Linear has
    no bias (the normalization's beta takes its role, paper Section 3.2).
    """
    layers, fan_in = [], 28 * 28
    for width in widths:
        lin = nn.Linear(fan_in, width, bias=norm == "none", generator=generator)
        if init_std is not None:
            nn.init.normal_(lin.weight, 0.0, init_std, generator=generator)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        layers.append(lin)
        if norm != "none":
            layers.append(_norm_layer(norm, cell, width))
        layers.append(ACTIVATIONS[activation]())
        if dropout:
            layers.append(nn.Dropout(dropout, generator=drop_rng))
        fan_in = width
    last = nn.Linear(fan_in, 10, generator=generator)
    if init_std is not None:
        nn.init.normal_(last.weight, 0.0, init_std, generator=generator)
        nn.init.zeros_(last.bias)
    layers.append(last)
    return nn.Sequential(*layers)


def _loss(model, xb, yb):
    return F.cross_entropy(model(Tensor(xb)), yb)


def _test_acc(x, y):
    def eval_fn(model):
        model.eval()
        return {"test_acc": evaluate(model, x, y)}

    return eval_fn


def _train(cell, model, x, y, eval_fn, steps, batch_size, dropout_rng=None, eval_every=None):
    opt = optim.SGD(model.parameters(), lr=cell["lr"], momentum=cell.get("sgd_momentum", 0.0))
    n_evals = cell["evals"]
    return train_run(
        model=model,
        optimizer=opt,
        loss_fn=_loss,
        train_x=x,
        train_y=y,
        eval_fn=eval_fn,
        steps=steps,
        batch_size=batch_size,
        eval_every=eval_every or max(1, steps // n_evals),
        seed=cell["seed"],
        dropout_rng=dropout_rng,
    )


def run_cell(cell, data):
    """Train the network of `cell` on `data` = ((x_train, y_train), (x_eval, y_eval)).

    Returns {"curve": {step, train_loss, test_acc, ...}, "wall_s", "steps_per_s", ...} with
    the question's extra measurements.
    """
    (x_train, y_train), (x_eval, y_eval) = data
    manual_seed(cell["seed"])
    gen = np.random.default_rng([cell["seed"], 0x57])
    q = cell["question"]
    if q == 1:
        norm = "batchnorm" if cell["bn"] else "none"
        model = _mlp((100, 100, 100), "sigmoid", norm, gen, cell, init_std=cell["init_std"])
        return _train(cell, model, x_train, y_train, _test_acc(x_eval, y_eval), cell["steps"], 60)
    if q == 2:
        norm = "batchnorm" if cell["bn"] else "none"
        model = _mlp((100,) * cell["depth"], cell["activation"], norm, gen, cell)
        out = _train(cell, model, x_train, y_train, _test_acc(x_eval, y_eval), cell["steps"], 60)
        out["saturated"] = _saturation(model, x_eval, cell["activation"])
        return out
    if q == 3:
        return _run_regularization(cell, gen, x_train, y_train, x_eval, y_eval)
    if q == 4:
        return _run_batch_size(cell, gen, x_train, y_train, x_eval, y_eval)
    raise ValueError(f"study: unknown question {q!r}")


def _saturation(model, x, activation):
    """Per hidden layer: fraction of (image, unit) pairs whose activation input is saturated."""
    limit, fractions = SATURATION[activation], []
    model.eval()
    with no_grad():
        h = Tensor(x)
        for layer in model:
            if isinstance(layer, ACTIVATIONS[activation]):
                fractions.append(float(np.mean(np.abs(h.data) > limit)))
            h = layer(h)
    return fractions


def _run_regularization(cell, gen, x_train, y_train, x_eval, y_eval):
    """Question 3: a net that can overfit, on a subset; train and test accuracy and loss."""
    n = cell["subset"]
    x_sub, y_sub = np.ascontiguousarray(x_train[:n]), y_train[:n]
    drop_rng = np.random.default_rng([cell["seed"], 0xD0])
    norm = "batchnorm" if cell["bn"] else "none"
    model = _mlp(
        tuple(cell["hidden"]),
        "relu",
        norm,
        gen,
        cell,
        dropout=cell["dropout"],
        drop_rng=drop_rng,
    )

    def loss_and_acc(model, x, y):
        total, correct = 0.0, 0
        with no_grad():
            for start in range(0, len(x), 2000):
                logits = model(Tensor(x[start : start + 2000]))
                yb = y[start : start + 2000]
                total += F.cross_entropy(logits, yb, reduction="sum").item()
                correct += int((logits.data.argmax(axis=1) == yb).sum())
        return total / len(x), correct / len(x)

    def eval_fn(model):
        model.eval()
        tr_loss, tr_acc = loss_and_acc(model, x_sub, y_sub)
        te_loss, te_acc = loss_and_acc(model, x_eval, y_eval)
        return {
            "test_acc": te_acc,
            "test_loss": te_loss,
            "train_acc": tr_acc,
            "train_eval_loss": tr_loss,
        }

    return _train(cell, model, x_sub, y_sub, eval_fn, cell["steps"], 60, dropout_rng=drop_rng)


def _run_batch_size(cell, gen, x_train, y_train, x_eval, y_eval):
    """Question 4: one normalization at one batch size; at the end, for the batch-statistics
    layers, test accuracy with the moving averages and with Algorithm 2's population statistics."""
    model = _mlp((100, 100, 100), "relu", cell["norm"], gen, cell)
    out = _train(
        cell, model, x_train, y_train, _test_acc(x_eval, y_eval), cell["steps"], cell["batch_size"]
    )
    out["test_acc_moving"] = out["curve"]["test_acc"][-1]
    if cell["norm"] in ("batchnorm", "batchrenorm"):
        m, n = cell["batch_size"], cell["population_samples"]
        batches = [x_train[i : i + m] for i in range(0, n - m + 1, m)]
        nn.utils.recompute_batchnorm_stats(model, batches)
        model.eval()
        out["test_acc_population"] = evaluate(model, x_eval, y_eval)
    return out
