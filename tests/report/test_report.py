"""kdkit.report: report.html and compare.html from real tiny runs, and feature importance on
hand-built models whose answer is known."""
import base64
import io
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from conftest import need_tool
import torch
from PIL import Image, ImageStat
from torch import nn

from kdkit.config import DistillConfig, apply_overrides
from kdkit.data import Dataset, Split
from kdkit.recipes import run_distill
from kdkit.report import compare, layer_importance, write_report
from kdkit.report.importance import ablated_predictions, held_out_batch, pooled_gradients

SECTIONS = {"summary", "curves", "classes", "calibration", "size", "importance", "config", "environment"}


def config(out, **overrides):
    base = {"dataset": "digits", "teacher": "cnn", "student": "cnn-tiny", "epochs": 1, "teacher_epochs": 1,
            "batch_size": 64, "progress": False, "log_every": 5, "out": str(out), "amp": "off", "method": "kd"}
    return apply_overrides(DistillConfig(), base | overrides)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("runs") / "kd"
    run_distill(config(out), digits)
    return out


@pytest.fixture(scope="module")
def report(run_dir):
    return write_report(run_dir)


class Page(HTMLParser):
    """The parts of a page the tests look at: section ids, tables (cell text), image sources, notes."""

    def __init__(self, text: str):
        super().__init__()
        self.sections, self.tables, self.images, self.notes, self.scripts = set(), {}, [], [], 0
        self._table, self._cell, self._note = None, None, False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.add(attrs.get("id"))
        elif tag == "table":
            self._table = self.tables.setdefault(attrs.get("id", f"table{len(self.tables)}"), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "script":
            self.scripts += 1
        self._note = attrs.get("class") == "note"

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._table is not None:
            self._table[-1].append(self._cell)
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._note:
            self.notes.append(data)
            self._note = False


def decode(src: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:40]  # inline only: the file must stand alone
    image = Image.open(io.BytesIO(base64.b64decode(src[len(prefix):])))
    image.load()
    return image


def test_report_has_every_section_table_and_decodable_image(report, run_dir):
    page = Page(report.read_text())
    assert SECTIONS <= page.sections
    assert [row[0] for row in page.tables["summary-table"][1:]] == ["teacher", "scratch", "student"]
    assert [row[0] for row in page.tables["importance-table"][1:]] == ["stage1", "stage2", "hidden"]
    assert any(row[0] == "torch" for row in page.tables["environment-table"])
    assert not [n for n in page.notes if "not available" in n], page.notes  # every figure was built
    assert len(page.images) >= 9 and page.scripts == 0
    for src in page.images:
        image = decode(src)
        assert image.width > 0 and image.height > 0
    result = json.loads((run_dir / "importance.json").read_text())
    assert [layer["dims"] for layer in result["layers"]] == [8, 16, 32]  # cnn-tiny: channels, channels, units
    assert all(len(layer["ablation_accuracy_drop"]) == layer["dims"] for layer in result["layers"])
    assert result["layers"][2]["offset"] == 24  # the slice of the distillation vector


def test_report_survives_what_it_cannot_rebuild(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("*.safetensors", "tb"))
    page = Page(write_report(copy).read_text())  # no weights: calibration and importance cannot run
    assert SECTIONS <= page.sections
    assert any("reliability diagram: not available" in n for n in page.notes)
    assert any("feature importance: not available" in n and "student weights" in n for n in page.notes)
    assert [row[0] for row in page.tables["summary-table"][1:]] == ["teacher", "scratch", "student"]


def test_report_renders_in_headless_chromium(report, tmp_path):
    """A non-blank screenshot and no console messages (the page has no scripts, so any console line,
    e.g. 'Uncaught ...' or ERROR:CONSOLE / INFO:CONSOLE, means something is wrong). Without chromium:
    skipped, except under CI=true (conftest.need_tool)."""
    need_tool(shutil.which("chromium") is None, "chromium not on PATH (.ci/run installs it; apt-get install chromium)")
    shot = tmp_path / "shot.png"
    result = subprocess.run(["chromium", "--headless", "--disable-gpu", "--no-sandbox", f"--screenshot={shot}",
                             "--window-size=1200,2000", "--enable-logging=stderr", "--v=0", report.resolve().as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert shot.is_file(), result.stderr[-2000:]
    pixels = ImageStat.Stat(Image.open(shot).convert("L"))
    assert pixels.var[0] > 0
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert not console, console


def test_compare_two_runs(run_dir, digits, tmp_path):
    again = tmp_path / "kd-again"
    run_distill(config(again, teacher=str(run_dir / "teacher"), baseline=False, temperature=2.0), digits)
    out = compare([run_dir, again], tmp_path / "cmp" / "compare.html")
    page = Page(out.read_text())
    names = [row[0] for row in page.tables["compare-table"][1:]]
    assert names == ["teacher", "scratch", "student (kd)", "student (kd-again)"]  # one shared teacher
    assert [row[0] for row in page.tables["runs-table"][1:]] == ["kd", "kd-again"]
    assert len(page.images) == 2 and all(decode(src).width > 0 for src in page.images)


def test_cli_report_and_compare(run_dir, tmp_path):
    kdkit = [sys.executable, "-m", "kdkit"]
    result = subprocess.run(kdkit + ["report", str(run_dir), "--no-importance"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(run_dir / "report.html")
    out = tmp_path / "c.html"
    result = subprocess.run(kdkit + ["compare", str(run_dir), str(tmp_path / "missing"), "--out", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: no summary.json in")


# ---------------------------------------------------------------- importance on hand-built models


class TwoBranch(nn.Module):
    """x (B, 1, 1, 4) -> two Linear branches of 3 units -> head. Only left[1] (= 5 * x0) decides the
    label (x0 > 0); every other unit reaches the logits with a 40x smaller weight."""

    def __init__(self):
        super().__init__()
        self.left, self.right, self.head = nn.Linear(4, 3, bias=False), nn.Linear(4, 3, bias=False), nn.Linear(6, 2, bias=False)
        self.feature_modules = ["left", "right"]
        with torch.no_grad():
            self.left.weight.copy_(torch.tensor([[0, 1, 0, 0], [5, 0, 0, 0], [0, 0, 1, 0]]))
            self.right.weight.copy_(torch.tensor([[0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0]]))
            w = torch.tensor([0.05, 2.0, 0.05, 0.05, 0.05, 0.05])
            self.head.weight.copy_(torch.stack([-w, w]))  # logit1 - logit0 = 2 * (its row . features)

    def forward(self, x):
        x = x.flatten(1)  # (B, 4)
        return self.head(torch.cat([self.left(x), self.right(x)], dim=1))  # (B, 2)


def synthetic(n=400) -> Dataset:
    x = torch.randn(n, 1, 1, 4, generator=torch.Generator().manual_seed(0))
    split = Split(x, (x[:, 0, 0, 0] > 0).long())
    return Dataset("synthetic", split, split, split, ["neg", "pos"], (0.0,), (1.0,), "none")


def test_the_one_signal_dimension_ranks_first():
    model = TwoBranch()
    result = layer_importance(model, TwoBranch(), synthetic(), teacher_layers=["left", "right"], n_samples=400)
    left, right = result["layers"]
    assert result["accuracy"] > 0.95 and result["agreement"] == 1.0
    drop = left["ablation_accuracy_drop"]
    assert max(range(3), key=drop.__getitem__) == 1 and drop[1] > 0.3  # about half the samples flip
    others = [v for layer in (left, right) for d, v in enumerate(layer["ablation_accuracy_drop"]) if (layer["name"], d) != ("left", 1)]
    assert max(others) < 0.05
    assert left["total"]["ablation_accuracy_drop"] > right["total"]["ablation_accuracy_drop"]
    agree = left["ablation_agreement_drop"] + right["ablation_agreement_drop"]  # the teacher: the same weights
    assert max(range(6), key=agree.__getitem__) == 1 and agree[1] > 0.3
    gxa = left["grad_x_act"] + right["grad_x_act"]
    assert max(range(6), key=gxa.__getitem__) == 1
    assert all(p.grad is None for p in model.parameters())  # gradients only for the analysis
    teacher_left, teacher_right = result["teacher"]["layers"]  # the same analysis of the teacher's side
    assert teacher_left["total"]["ablation_accuracy_drop"] > teacher_right["total"]["ablation_accuracy_drop"]


class Residual(nn.Module):
    """A skip connection around the tapped `conv`: copies made at its output cannot reach the add."""

    def __init__(self):
        super().__init__()
        self.stem, self.conv, self.head = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x):
        h = self.stem(x)  # (B, 4, H, W)
        return self.head((h + self.conv(h)).mean(dim=(2, 3)))


class Tokens(nn.Module):
    """(B, 1, 2, 4) read as 2 tokens of 4 features; `proj` outputs (B, T, D) tokens."""

    def __init__(self):
        super().__init__()
        self.proj, self.head = nn.Linear(4, 5), nn.Linear(5, 3)

    def forward(self, x):
        return self.head(torch.relu(self.proj(x.flatten(1, 2))).mean(1))


def _ablate_by_hand(model, name, x, channel):
    axis = 2 if name == "proj" else 1  # the pooled dimension's axis

    def hook(module, inputs, out):
        out = out.clone()
        index = [slice(None)] * out.ndim
        index[axis] = channel
        out[tuple(index)] = out[tuple(index)].mean(0)
        return out

    handle = dict(model.named_modules())[name].register_forward_hook(hook)
    with torch.no_grad():
        logits = model(x)
    handle.remove()
    return logits.argmax(1)


@pytest.mark.parametrize("make, name, shape", [(Residual, "conv", (1, 6, 6)), (Residual, "stem", (1, 6, 6)),
                                               (Tokens, "proj", (1, 2, 4))])
def test_stacked_ablation_equals_one_dimension_at_a_time(make, name, shape):
    torch.manual_seed(0)
    model, x = make().eval(), torch.randn(64, *shape)
    channels = [0, 2, 3]
    stacked = ablated_predictions(model, name, x, channels)  # (3, 64)
    for j, c in enumerate(channels):
        assert torch.equal(stacked[j], _ablate_by_hand(model, name, x, c))


def test_grad_x_act_matches_the_gradient_of_the_map():
    """d logit / d pooled channel = sum over positions of d logit / d map (a uniform shift)."""
    torch.manual_seed(0)
    model, x = Residual().eval(), torch.randn(16, 1, 6, 6)
    acts, grads, shape = pooled_gradients(model, "conv", x)  # (16, 4) each
    saved = {}
    handle = model.conv.register_forward_hook(lambda m, i, out: saved.setdefault("map", out.retain_grad() or out))
    logits = model(x)
    logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
    handle.remove()
    assert shape == (4, 6, 6)
    assert torch.allclose(acts, saved["map"].mean(dim=(2, 3)).detach(), atol=1e-6)
    assert torch.allclose(grads, saved["map"].grad.sum(dim=(2, 3)), atol=1e-5)


def test_held_out_batch_is_a_normalised_fixed_subset(digits):
    x, y = held_out_batch(digits, "test", 100, "cpu")
    again, _ = held_out_batch(digits, "test", 100, "cpu")
    assert x.shape == (100, 1, 8, 8) and torch.equal(x, again) and abs(x.mean().item()) < 0.5
    assert len(set(y.tolist())) > 5  # classes mixed, not the first rows of a sorted split


# ---------------------------------------------------------------- what is not a run (issue 20)


def test_a_file_or_a_damaged_summary_is_named(tmp_path):
    from kdkit.errors import KdkitError
    from kdkit.report.html import read_summary

    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text('{"rows": ')  # cut off while written, or edited
    with pytest.raises(KdkitError, match=rf"^'{run}/summary.json' is damaged \(not valid JSON: Expecting value: line 1 column 10\); "
                                         rf"write it again: kdkit distill --config {run}/config.yaml --resume \(finished phases "
                                         r"are not trained again\)$"):
        read_summary(run)
    (run / "summary.json").write_text("[1, 2]")
    with pytest.raises(KdkitError, match=rf"^'{run}/summary.json' is damaged \(a list, not a mapping\); write it again: "):
        read_summary(run)
    with pytest.raises(KdkitError, match=rf"^'{run}/summary.json' is a file; point at the `kdkit distill` run directory "
                                         rf"that holds it: {run}$"):
        compare([run / "summary.json"], tmp_path / "c.html")
    result = subprocess.run([sys.executable, "-m", "kdkit", "report", str(run / "summary.json")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip() == (f"error: '{run}/summary.json' is a file; point at the "
                                                               f"`kdkit distill` run directory that holds it: {run}")


# ---------------------------------------------------------------- the verdict, section names, readable axes


def summary_of(teacher=0.90, scratch=(0.80,), student=(0.85,), teacher_on="test") -> dict:
    """A summary.json with the given test accuracies per seed (scratch=None: no baseline)."""
    from kdkit.summary import mean_std

    def row(values, **seed_extra):
        return {"metrics": {"accuracy": mean_std(values)}, "per_seed": [dict(accuracy=v, **seed_extra) for v in values]}

    rows = {"teacher": row([teacher], measured_on=teacher_on), "student": row(list(student))}
    if scratch is not None:
        rows["scratch"] = row(list(scratch))
    return {"rows": rows, "method": "kd", "seeds": list(range(len(student)))}


@pytest.mark.parametrize("summary, expected", [
    (summary_of(scratch=(0.80, 0.802, 0.798), student=(0.85, 0.852, 0.848)),
     "Distillation gained +5.0 points of test accuracy over the same student trained alone (50% of the teacher-scratch "
     "gap closed), mean of 3 seeds."),
    (summary_of(),
     "Distillation gained +5.0 points of test accuracy over the same student trained alone (50% of the teacher-scratch "
     "gap closed), from one seed: rerun with several (e.g. --seeds 0,1,2) before trusting a difference this size."),
    (summary_of(scratch=(0.80, 0.80), student=(0.79, 0.79)),
     "Distillation did not pay: the distilled student scored 1.0 points of test accuracy below the same student trained "
     "alone, mean of 2 seeds."),
    (summary_of(scratch=(0.80, 0.80), student=(0.80, 0.80)),
     "Distillation did not pay: the distilled student matched the same student trained alone in test accuracy, mean of 2 seeds."),
    (summary_of(scratch=(0.78, 0.82), student=(0.80, 0.84)),
     "Distillation gained +2.0 points of test accuracy over the same student trained alone (20% of the teacher-scratch "
     "gap closed), mean of 2 seeds, within the seed-to-seed spread (±2.8 points)."),
    (summary_of(teacher=0.75, scratch=(0.80, 0.80), student=(0.82, 0.82)),
     "Distillation gained +2.0 points of test accuracy over the same student trained alone (the teacher is not above it, "
     "so there is no teacher-scratch gap to close), mean of 2 seeds."),
    (summary_of(teacher_on="val", scratch=(0.80, 0.80), student=(0.82, 0.82)),
     "Distillation gained +2.0 points of test accuracy over the same student trained alone, mean of 2 seeds."),
    (summary_of(scratch=None, student=(0.85,)),
     "No scratch student was trained (baseline off), so this run cannot say what distillation gained: the distilled "
     "student reaches 85.0% test accuracy (teacher 90.0%)."),
])
def test_verdict(summary, expected):
    from kdkit.report.reading import verdict

    assert verdict(summary) == expected


def test_the_page_opens_with_the_verdict_and_names_sections_by_what_they_measure(report, run_dir):
    from kdkit.report.reading import importance_title, verdict

    text = report.read_text()
    opening = re.search(r"<h1>[^<]*</h1>\n<p id=\"verdict\">([^<]*)</p>\n<section id=\"summary\">", text)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert opening and opening.group(1) == verdict(summary).replace("'", "&#x27;")
    assert "from one seed" in opening.group(1)  # the fixture's run has one seed
    titles = dict(re.findall(r'<section id="(\w+)"><h2>([^<]*)</h2>', text))
    assert titles["importance"] == "Feature importance: which of the distilled student&#x27;s features its accuracy rests on"
    assert "distillation vector" not in text  # a kd run has none
    assert "distillation vector" in importance_title("vector") and "distillation vector" in importance_title("kd+vector")
    assert "distillation vector" not in importance_title("fitnet") + importance_title("no-such-method")


@pytest.mark.parametrize("values", [[0.31, 0.38], [0.12, 0.35, 0.9], [0.05, 40.0], [2e3, 5e4, 3e6], [1e2, 1e9], [7.0]])
def test_log_axis_labels_do_not_overlap(values):
    import matplotlib.pyplot as plt

    from kdkit.report import plots

    fig, ax = plt.subplots(figsize=(5.2, 4))  # accuracy_vs's size
    ax.scatter(values, [50] * len(values))
    plots.log_axis(ax, values)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    low, high = ax.get_xlim()
    labels = [t for t in ax.xaxis.get_ticklabels(which="both") if t.get_text() and low <= t.get_position()[0] <= high]
    plt.close(fig)
    assert 2 <= len(labels) <= 6, [t.get_text() for t in labels]
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
    assert all(left.x1 < right.x0 for left, right in zip(boxes, boxes[1:])), [t.get_text() for t in labels]
    assert all(re.fullmatch(r"[\d.]+[kMG]?", t.get_text()) for t in labels)  # plain numbers, no 10^x
