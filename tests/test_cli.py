"""The command line is made from the configs and functions it feeds, documents every option, and tells a user's
mistake (one line, exit 2) from a bug (a traceback)."""

import argparse
import dataclasses
import subprocess
import sys

import pytest

from saerad import cli
from saerad.configs import PretrainConfig, TrainConfig
from saerad.errors import UserError
from saerad.options import field_docs


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {n}", s) for n, s in _subparsers(sub))


def test_every_option_of_every_command_has_help():
    undocumented = [(name, action.dest) for name, sub in _subparsers(cli.build_parser())
                    for action in sub._actions
                    if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
                    and not (action.help or "").strip()]
    assert undocumented == []


@pytest.mark.parametrize("command,config", [("train", TrainConfig), ("pretrain", PretrainConfig)])
def test_every_config_field_is_an_option_with_the_same_default_and_its_docstring(command, config):
    required = {"train": ["--embeddings", "e", "--out", "o"], "pretrain": ["--dataset", "d", "--out", "o"]}[command]
    args = cli.build_parser(only=command).parse_args([command, *required])
    docs = field_docs(config)
    (sub,) = [s for name, s in _subparsers(cli.build_parser(only=command)) if name == command]
    helps = {a.dest: a.help for a in sub._actions}
    for field in dataclasses.fields(config):
        assert getattr(args, field.name) == field.default, field.name
        assert helps[field.name].startswith(docs[field.name].replace("%", "%%")), field.name


def test_options_reach_the_config():
    args = cli.build_parser(only="train").parse_args(
        ["train", "--embeddings", "e", "--out", "o", "--architecture", "topk", "--k", "7", "--warmup-frac", "0.1"])
    config = cli.from_args(TrainConfig, args)
    assert (config.architecture, config.k, config.warmup_frac, config.magnitude_lr_scale) == ("topk", 7, 0.1, 200.0)
    with pytest.raises(SystemExit):  # a value outside a Literal's choices is argparse's error
        cli.build_parser(only="train").parse_args(["train", "--embeddings", "e", "--out", "o", "--architecture", "x"])


def test_function_defaults_are_read_from_the_function():
    from saerad.embed import embed
    from saerad.evaluation.runner import run_evaluation
    from saerad.interpret import interpret
    from saerad.options import defaults

    parse = lambda *a: cli.build_parser(only=a[0]).parse_args(list(a))  # noqa: E731
    embed_args = parse("embed", "--backbone", "b", "--dataset", "d", "--out", "o")
    assert {k: getattr(embed_args, k) for k in ("pooling", "dtype", "batch_size", "shard_size", "num_workers")} == {
        k: defaults(embed)[k] for k in ("pooling", "dtype", "batch_size", "shard_size", "num_workers")}
    interpret_args = parse("interpret", "--sae", "s", "--embeddings", "e", "--reports", "r", "--out", "o")
    assert interpret_args.score_threshold == defaults(interpret)["score_threshold"]
    assert parse("evaluate", "--dataset", "d").n_resamples == defaults(run_evaluation)["n_resamples"]


def test_help_of_a_command_lists_its_config_fields():
    run = subprocess.run([sys.executable, "-m", "saerad", "train", "--help"], capture_output=True, text=True)
    assert run.returncode == 0
    flat = " ".join(run.stdout.split())
    assert "--magnitude-lr-scale" in flat and "(default: 200.0)" in flat and "--decoder-bias {median,mean}" in flat


def test_a_user_mistake_is_one_line_and_exit_2_and_debug_shows_the_traceback(monkeypatch, capsys):
    def mistaken(args):
        raise UserError("--thing must be positive\nmore detail")

    monkeypatch.setitem(cli.COMMANDS, "push", (*cli.COMMANDS["push"][:2], mistaken))
    assert cli.main(["push", "m", "--repo-id", "a/b", "--dry-run"]) == 2
    assert capsys.readouterr().err == "saerad push: error: --thing must be positive\n"
    with pytest.raises(UserError):
        cli.main(["--debug", "push", "m", "--repo-id", "a/b"])


def test_a_bug_is_never_disguised_as_a_user_mistake(monkeypatch):
    def buggy(args):
        raise ValueError("shapes (3,) and (4,) not aligned")  # from deep inside a library: not the user's input

    monkeypatch.setitem(cli.COMMANDS, "push", (*cli.COMMANDS["push"][:2], buggy))
    with pytest.raises(ValueError, match="not aligned"):
        cli.main(["push", "m", "--repo-id", "a/b"])


def test_parsing_imports_only_the_command_that_runs():
    code = ("import sys; from saerad.cli import build_parser; build_parser(only='push').parse_args("
            "['push', 'm', '--repo-id', 'a/b']); print('torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.stdout.strip() == "False", run.stderr
