"""The plain progress line: every shown metric under its own label."""

from alphapo.train.metrics import Progress


def test_progress_line_labels_are_distinct(capsys):
    progress = Progress("lines", total=4, start=0, enabled=True)
    metrics = {
        "loss": 0.5,
        "rewards/accuracies": 0.75,
        "rewards/margins": 1.25,
        "logps/chosen": -0.5,
        "displacement/chosen": 0.125,
        "grad_norm": 2.0,
    }
    progress.update(2, 1000.0, metrics)
    line = capsys.readouterr().err
    assert line.startswith("step 2/4 | 1,000 tok/s ")
    for part in ("loss=0.5", "acc=0.75", "margin=1.25", "logp_chosen=-0.5", "displ_chosen=0.125", "grad_norm=2"):
        assert part in line
    labels = [kv.split("=")[0] for kv in line.split("|")[1].split()[2:]]
    assert len(labels) == len(set(labels)) == len(metrics)


def test_the_bar_keeps_its_bar_and_eta_on_an_80_column_terminal():
    import io

    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    progress = Progress("bar", total=100, start=0, enabled=True, console=console)
    metrics = {"loss": 0.69314, "rewards/accuracies": 0.5, "rewards/margins": 0.01, "logps/chosen": -12.5}
    progress.update(40, 12345.0, metrics)
    progress.bar.refresh()
    progress.close()
    text = out.getvalue().replace("\x1b[2K", "").replace("\x1b[?25l", "").replace("\x1b[?25h", "")
    line = [x for x in text.replace("\r", "\n").splitlines() if "train" in x][-1]
    assert len(line) <= 80 and "40/100" in line and "eta" in line and "━" in line
    assert "12,345 tok/s" in line  # the start of the metrics survives; the rest is cut with an ellipsis
