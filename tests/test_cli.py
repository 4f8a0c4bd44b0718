"""The `modellens` command line: train, profile, clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from service.artifact.card import ModelCard
from service.artifact.profile import PROFILE_FILE, ReferenceProfile
from service.cli import main


class TestTrain:
    """`modellens train` writes a model directory; `--if-missing` keeps an existing one."""

    def test_train_bundled_then_if_missing(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        output = tmp_path / "wine"
        assert main(["train", "--dataset", "wine", "--output", str(output)]) == 0
        card = ModelCard.load(output)
        assert card.task == "classification"
        assert "trained wine version" in capsys.readouterr().out
        assert main(["train", "--dataset", "wine", "--output", str(output), "--if-missing"]) == 0
        assert ModelCard.load(output).version == card.version
        assert "skipping" in capsys.readouterr().out

    def test_an_existing_model_is_replaced_only_with_force(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        output = tmp_path / "wine"
        assert main(["train", "--dataset", "wine", "--output", str(output)]) == 0
        first = ModelCard.load(output)
        capsys.readouterr()
        assert main(["train", "--dataset", "wine", "--seed", "1", "--output", str(output)]) == 2
        assert "--force" in capsys.readouterr().err
        assert ModelCard.load(output).version == first.version
        assert main(["train", "--dataset", "wine", "--seed", "1", "--output", str(output), "--force"]) == 0
        assert ModelCard.load(output).version != first.version

    def test_dataset_and_data_together_are_refused(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        arguments = ["train", "--dataset", "wine", "--data", str(tmp_path / "x.csv"), "--target", "y"]
        assert main([*arguments, "--output", str(tmp_path / "m")]) == 2
        assert "give one" in capsys.readouterr().err
        assert not (tmp_path / "m").exists()

    def test_train_csv_needs_target(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["train", "--data", str(tmp_path / "x.csv")]) == 2
        assert "--target" in capsys.readouterr().err

    def test_columns_to_train_on_or_to_drop(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        data = tmp_path / "customers.csv"
        rows = [f"{i},{i % 7},{(i * 3) % 11},{i % 2},{i % 7 + (i * 3) % 11}" for i in range(60)]
        data.write_text("customer_id,visits,spend,leak,revenue\n" + "\n".join(rows) + "\n")
        base = ["train", "--data", str(data), "--target", "revenue", "--task", "regression"]
        assert main([*base, "--drop", "customer_id, leak", "--output", str(tmp_path / "a")]) == 0
        assert ModelCard.load(tmp_path / "a").feature_names == ("visits", "spend")
        assert main([*base, "--features", "spend", "--output", str(tmp_path / "b")]) == 0
        assert ModelCard.load(tmp_path / "b").feature_names == ("spend",)
        capsys.readouterr()
        assert main([*base, "--drop", "customer_ids", "--output", str(tmp_path / "c")]) == 2
        assert "--drop names columns it lacks: ['customer_ids']" in capsys.readouterr().err
        assert main([*base, "--features", "revenue", "--output", str(tmp_path / "d")]) == 2
        assert "--features names the target column 'revenue'" in capsys.readouterr().err
        assert main(["train", "--dataset", "wine", "--drop", "x", "--output", str(tmp_path / "e")]) == 2
        assert "they need --data" in capsys.readouterr().err
        assert not any((tmp_path / name).exists() for name in "cde")
        # A target of a few integers reads as classes; one with a single row cannot be split: a message, no trace.
        assert main(["train", "--data", str(data), "--target", "revenue", "--output", str(tmp_path / "f")]) == 2
        assert "a stratified split needs two" in capsys.readouterr().err

    def test_train_csv_errors_are_messages(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["train", "--data", str(tmp_path / "absent.csv"), "--target", "y"]) == 2
        assert "error:" in capsys.readouterr().err


class TestProfile:
    """`modellens profile` rebuilds the reference profile of a model trained elsewhere from its training CSV."""

    def test_profile_from_csv(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        rng = np.random.default_rng(0)
        frame = pd.DataFrame(
            {
                "size": rng.normal(10, 2, 300),
                "colour": rng.choice(["red", "green", "blue"], 300),
                "price": rng.normal(100, 10, 300),
            }
        )
        data = tmp_path / "train.csv"
        frame.to_csv(data, index=False)
        model_dir = tmp_path / "model"
        assert main(["train", "--data", str(data), "--target", "price", "--output", str(model_dir)]) == 0
        original = ReferenceProfile.load(model_dir)
        (model_dir / PROFILE_FILE).unlink()
        assert main(["profile", "--model", str(model_dir), "--data", str(data)]) == 0
        rebuilt = ReferenceProfile.load(model_dir)
        assert rebuilt.model_version == original.model_version
        assert set(rebuilt.features) == {"size", "colour"}
        assert rebuilt.features["colour"].labels == ("blue", "green", "red", "__unseen__", "__missing__")
        assert "colour" in rebuilt.slices
        assert "slice candidates: colour" in capsys.readouterr().out

    def test_profile_needs_the_feature_columns(
        self, tmp_path: Path, regression_model_dir: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        data = tmp_path / "other.csv"
        pd.DataFrame({"a": [1.0, 2.0]}).to_csv(data, index=False)
        assert main(["profile", "--model", str(regression_model_dir), "--data", str(data)]) == 2
        assert "lacks the model's feature columns" in capsys.readouterr().err


class TestHelp:
    """`--help` describes every option of every command."""

    @pytest.mark.parametrize("command", ["train", "profile", "loadgen", "serve", "triage"])
    def test_every_option_says_what_it_does(self, command: str, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        options = capsys.readouterr().out.split("options:", 1)[1]
        entries = re.split(r"\n(?=  -)", options.strip("\n"))
        # An entry is its option and metavar, then its help: after two spaces, or on the indented lines below.
        silent = [entry for entry in entries if "\n" not in entry and not re.search(r"\S {2,}\S", entry.strip())]
        assert not silent
