"""Hydra entry points with one-line errors.

Hydra reports a misspelled key or group option as a multi-line message with a stack-trace
hint. Before handing over to ``hydra.main`` we check the command-line overrides against the
real config tree ourselves and turn problems into ``error: ...`` lines with a suggestion.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from astrorestore.errors import UserError

EXIT_USER_ERROR = 2


def _group_options(config_dir: Path, group: str) -> list[str]:
    folder = config_dir / group
    return sorted(path.stem for path in folder.glob("*.yaml")) if folder.is_dir() else []


def _flat_keys(config: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in config.keys() if isinstance(config, DictConfig) else []:
        full = f"{prefix}{key}"
        keys.append(full)
        child = config._get_node(key)
        if isinstance(child, DictConfig):
            keys.extend(_flat_keys(child, full + "."))
    return keys


def _first_line(exc: BaseException) -> str:
    parts = [str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__]
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause).strip():
        parts.append(str(cause).strip().splitlines()[0])
    return ": ".join(parts)


def check_overrides(config_dir: Path, config_name: str, overrides: list[str]) -> None:
    """Raise UserError if an override names an unknown key, group or group option."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:  # hydra's OverrideParseException
        raise UserError(f"cannot parse overrides {overrides}: {_first_line(exc)}") from None
    group_overrides, key_overrides = [], []
    for override in parsed:
        key = override.key_or_group
        if key.startswith("hydra") or override.is_add() or override.is_force_add():
            continue
        options = _group_options(config_dir, key)
        if options:
            values = (
                list(override.sweep_iterator())
                if override.is_sweep_override()
                else [override.value()]
            )
            for value in values:
                if value is not None and str(value) not in options:
                    close = difflib.get_close_matches(str(value), options, n=1)
                    hint = f" (did you mean {key}={close[0]}?)" if close else ""
                    raise UserError(
                        f"no option '{value}' in config group '{key}'{hint}; "
                        f"choose one of: {', '.join(options)}"
                    )
            if not override.is_sweep_override():
                group_overrides.append(override.input_line)
        else:
            key_overrides.append(override)

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(config_dir), version_base="1.3"):
            config = compose(config_name, overrides=group_overrides)
            known = set(_flat_keys(config))
            for override in key_overrides:
                key = override.key_or_group
                if override.is_delete() or key in known:
                    continue
                close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise UserError(
                    f"unknown config key '{key}'{hint}; list the keys with "
                    f"`python {Path(sys.argv[0]).name} --cfg job`, or add a new key with +{key}=..."
                )
            simple = group_overrides + [
                o.input_line for o in key_overrides if not o.is_sweep_override()
            ]
            try:
                compose(config_name, overrides=simple)
            except Exception as exc:
                raise UserError(f"bad override: {_first_line(exc)}") from None
    finally:
        GlobalHydra.instance().clear()


def _cli_overrides(argv: list[str]) -> list[str]:
    """The key=value arguments (not Hydra's own flags such as -m or --cfg job)."""
    overrides, skip_next = [], False
    for arg in argv:
        if skip_next:
            skip_next = False
            continue
        if arg in (
            "--cfg",
            "-c",
            "--package",
            "-p",
            "--config-name",
            "-cn",
            "--config-dir",
            "-cd",
            "--info",
            "-i",
            "--experimental-rerun",
        ):
            skip_next = arg not in ("--info", "-i")
            continue
        if arg.startswith("-"):
            continue
        overrides.append(arg)
    return overrides


def run_hydra(task: Callable[[DictConfig], Any], config_dir: Path, config_name: str) -> None:
    """Check the overrides, then run ``task`` under ``hydra.main``; UserError -> exit 2."""
    try:
        check_overrides(config_dir, config_name, _cli_overrides(sys.argv[1:]))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)

    @hydra.main(config_path=str(config_dir), config_name=config_name, version_base="1.3")
    def main(cfg: DictConfig) -> Any:
        try:
            return task(cfg)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    main()
