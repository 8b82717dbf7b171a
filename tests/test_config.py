"""One config path (bench/config.py): attacks and defenses convert values by their dataclass type hints,
and a value of the wrong type is a one-line error naming the field and the type expected."""

from __future__ import annotations

from typing import Any

import neokd_bench as nb
import numpy as np
import pytest
from neokd_bench.cli import main
from neokd_bench.config import coerce
from neokd_bench.errors import UsageError


@pytest.mark.parametrize("tp,value,expected", [
    (float, "0.1", 0.1),
    (float, "8/255", 8 / 255),
    (float, 3, 3.0),
    (int, "7", 7),
    (int, np.int64(7), 7),
    (float, np.float32(0.5), 0.5),
    (bool, "false", False),
    (bool, True, True),
    (str, "eval", "eval"),
    (tuple[float, ...], "[1, 1.5]", (1.0, 1.5)),
    (tuple[float, ...], "1,1.5", (1.0, 1.5)),
    (tuple[float, ...], [1, 2], (1.0, 2.0)),
    (tuple[float, ...] | None, 2, (2.0,)),
    (float | None, "none", None),
    (str | None, "null", None),
    (int | None, None, None),
    (str | int, "2", "2"),
    (str | int, 2, 2),
    (Any, [1, "a"], [1, "a"]),
])
def test_values_convert_by_type_hint(tp, value, expected):
    got = coerce("test", "field", tp, value)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("tp,value,expected_words", [
    (float, (1, 2), "give a number"),
    (float, {}, "give a number"),
    (float, "abc", "give a number"),
    (float, True, "give a number"),
    (int, 7.5, "give an integer"),
    (int, "7.5", "give an integer"),
    (bool, "yes", "give true or false"),
    (str, 3, "give a string"),
    (tuple[float, ...], "[1, oops]", "give a list of numbers"),
    (float | None, [1], "give a number or null"),
])
def test_a_wrong_value_is_a_one_line_error_naming_the_field_and_type(tp, value, expected_words):
    with pytest.raises(UsageError) as info:
        coerce("defense 'x'", "alpha", tp, value, default=3.0)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("defense 'x': alpha=") and expected_words in msg
    assert "e.g. alpha=3.0" in msg


def test_defenses_and_attacks_share_the_conversion():
    d = nb.create_defense("neokd", alpha="2", gamma="1,1,1.5", attack_fold_bn="false", steps="3")
    assert (d.config.alpha, d.config.gamma, d.config.attack_fold_bn, d.config.steps) == (2.0, (1.0, 1.0, 1.5),
                                                                                         False, 3)
    a = nb.create_attack("pgd", eps="8/255", steps="7", random_start="false", amp_dtype="none")
    assert (a.config.eps, a.config.steps, a.config.random_start, a.config.amp_dtype) == (8 / 255, 7, False, None)
    for build, kw, words in ((nb.create_defense, {"alpha": (1, 2)}, "defense 'neokd': alpha=[1, 2]"),
                             (nb.create_attack, {"steps": 7.5}, "attack 'pgd': steps=7.5")):
        with pytest.raises(UsageError) as info:
            build("neokd" if build is nb.create_defense else "pgd", **kw)
        assert words in str(info.value) and "\n" not in str(info.value)


def test_one_objective_parser_for_training_and_evaluation_attacks():
    """A defense's train_attack is read by the attacks' Objective.parse: same spellings, same canonical form."""
    assert nb.create_defense("adv", train_attack=" EXIT:1 ").config.train_attack == "exit:1"
    assert nb.create_attack("pgd", objective=" EXIT:1 ").objective.exit == 1
    for bad in ("exit:-1", "exit:", "mean"):
        with pytest.raises(UsageError, match="not an objective"):
            nb.create_defense("adv", train_attack=bad)


@pytest.mark.parametrize("item,words", [("alpha=[1,2]", "alpha=[1, 2] is not valid; give a number"),
                                        ("beta={}", "beta={} is not valid; give a number"),
                                        ("steps=2.5", "steps=2.5 is not valid; give an integer"),
                                        ("gamma=[1,\"a\"]", "give a list of numbers")])
def test_cli_set_of_the_wrong_type_is_one_line_and_exit_2(capsys, tmp_path, item, words):
    rc = main(["run", "--defense", "neokd", "--dataset", "fashion-mnist", "--preset", "smoke", "--set", item,
               "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and words in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()
