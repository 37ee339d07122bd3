"""Issue 14: one spelling of the flags every sn_tf CLI shares (absl style)."""

import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO)


def test_convert_takes_noprogress_like_predict_and_keeps_the_old_spelling(tmp_path):
    for flag in ("--noprogress", "--no_progress", "--progress"):
        r = _run("-m", "sn_tf.convert", flag, f"--data_dir={tmp_path / 'absent'}",
                 f"--output_dir={tmp_path / 'out'}")
        assert "Unknown command line flag" not in r.stderr, (flag, r.stderr)
        assert r.returncode == 1 and "absent" in r.stderr, (flag, r.stderr)


def test_train_takes_seed_and_json_like_the_other_clis():
    code = ("from absl import flags\nfrom sn_tf import train\n"
            "flags.FLAGS(['train', '--config=c', '--data_dir=d', '--model_dir=m', '--seed=7', "
            "'--json=s.json'])\n"
            "print(train._overrides(), flags.FLAGS.json)\n")
    r = _run("-c", code)
    assert r.returncode == 0, r.stderr[-1500:]
    assert "'train.seed=7'" in r.stdout and "s.json" in r.stdout
