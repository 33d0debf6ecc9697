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

from astrorestore.errors import EXIT_INTERRUPTED, UserError, find_user_error

EXIT_USER_ERROR = 2


def _group_options(config_dirs: list[Path], group: str) -> list[str]:
    options = set()
    for config_dir in config_dirs:
        folder = config_dir / group
        if folder.is_dir():
            options.update(path.stem for path in folder.glob("*.yaml"))
    return sorted(options)


def _flat_keys(config: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a plain (container) config tree."""
    keys = []
    if isinstance(config, dict):
        for key, child in config.items():
            full = f"{prefix}{key}"
            keys.append(full)
            keys.extend(_flat_keys(child, full + "."))
    return keys


def _first_line(exc: BaseException) -> str:
    parts = [str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__]
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause).strip():
        parts.append(str(cause).strip().splitlines()[0])
    return ": ".join(parts)


# Names users bring from other tools for a key spelt otherwise here; suggested before any
# close spelling when the key exists next to the unknown one (data.path -> data.root, not
# data.patch_size).
_SYNONYMS = {name: "root" for name in ("path", "dir", "folder", "directory", "data_dir", "input")}


def _unknown_key_error(key: str, known: set[str]) -> UserError:
    from astrorestore.postprocess.stages import renamed_key

    renamed = renamed_key(key)
    if renamed is not None:
        return UserError(renamed)
    parent, _, leaf = key.rpartition(".")
    synonym = f"{parent}.{_SYNONYMS[leaf]}" if parent and leaf in _SYNONYMS else None
    close = (
        [synonym]
        if synonym in known
        else difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    )
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return UserError(
        f"unknown config key '{key}'{hint}; list the keys with "
        f"`python {Path(sys.argv[0]).name} --cfg job`, or add a new key with +{key}=..."
    )


def _parse_error(parser: Any, overrides: list[str], exc: Exception) -> UserError:
    """Name the override Hydra's grammar rejects and how to quote it (paths with non-ASCII
    letters, brackets or commas need quotes)."""
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except Exception as own:
            key, sep, value = override.partition("=")
            quoted = f"\"{key}='{value}'\"" if sep and "'" not in value else None
            hint = f"; quote the value for Hydra, e.g. {quoted}" if quoted else ""
            return UserError(f"cannot parse the override {override}: {_first_line(own)}{hint}")
    return UserError(f"cannot parse overrides {overrides}: {_first_line(exc)}")


def _values(override: Any) -> list[Any]:
    """The value of an override, or each value of a sweep (none for an interval sweep)."""
    if not override.is_sweep_override():
        return [override.value()]
    try:
        return list(override.sweep_iterator())
    except Exception:  # interval sweeps (Optuna) have no finite list of values
        return []


def check_overrides(
    config_dir: Path,
    config_name: str,
    overrides: list[str],
    extra_dirs: tuple[Path, ...] = (),
) -> None:
    """Raise UserError if an override names an unknown key, group or group option.

    ``extra_dirs`` are added to the config search path (Hydra's ``-cd/--config-dir``).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except Exception as exc:  # hydra's OverrideParseException
        raise _parse_error(parser, overrides, exc) from None
    config_dirs = [config_dir, *extra_dirs]
    group_overrides, key_overrides = [], []
    for override in parsed:
        key = override.key_or_group
        if key.startswith("hydra") or override.is_add() or override.is_force_add():
            continue
        options = _group_options(config_dirs, key)
        if options:
            for value in _values(override):
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

    # The compose API looks for the primary config only in the directory it is initialised
    # with; the others (e.g. configs/ when -cd points at sweeps/) join the search path.
    init_dir, *others = [*extra_dirs, config_dir]
    search = [f"file://{d.resolve()}" for d in others]
    search_override = [f"hydra.searchpath=[{','.join(search)}]"] if search else []
    simple = group_overrides + [o.input_line for o in key_overrides if not o.is_sweep_override()]

    def keys_of(config: Any) -> set[str]:
        return set(_flat_keys(OmegaConf.to_container(config, resolve=False)))

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(Path(init_dir).resolve()), version_base="1.3"):
            try:
                config = compose(config_name, overrides=search_override + simple)
            except Exception as exc:
                # Only on failure: compose without the key overrides to name the bad key.
                try:
                    base = compose(config_name, overrides=search_override + group_overrides)
                except Exception:
                    raise UserError(f"bad override: {_first_line(exc)}") from None
                known = keys_of(base)
                for override in key_overrides:
                    if not override.is_delete() and override.key_or_group not in known:
                        raise _unknown_key_error(override.key_or_group, known) from None
                raise UserError(f"bad override: {_first_line(exc)}") from None
            known = keys_of(config)
            for override in key_overrides:  # sweep keys were not part of the composition
                if not override.is_delete() and override.key_or_group not in known:
                    raise _unknown_key_error(override.key_or_group, known)
            if key_overrides:
                # The values' types against the defaults the key overrides replace.
                base = OmegaConf.to_container(
                    compose(config_name, overrides=search_override + group_overrides),
                    resolve=False,
                )
                for override in key_overrides:
                    if override.is_delete():
                        continue
                    default = _lookup(base, override.key_or_group)
                    for value in _values(override):
                        error = _wrong_type(override.key_or_group, value, default)
                        if error is not None:
                            raise error
    finally:
        GlobalHydra.instance().clear()


def _lookup(config: Any, key: str) -> Any:
    """The value at dotted ``key`` of a plain config tree (None where absent)."""
    for part in key.split("."):
        if not isinstance(config, dict) or part not in config:
            return None
        config = config[part]
    return config


def _accepts(annotation: Any, value: Any) -> bool:
    """Whether ``value`` fits a type annotation (unknown constructs: yes)."""
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if origin is typing.Union:
        return any(_accepts(arg, value) for arg in args)
    if origin is typing.Literal:
        return value in args
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation in (bool, str):
        return isinstance(value, annotation)
    if origin in (list, tuple) or annotation in (list, tuple):
        return isinstance(value, list | tuple)
    return True


def _type_name(annotation: Any) -> str:
    import typing

    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Union and len(args) == 1:
        annotation = args[0]
    names = {int: "an integer", float: "a number", bool: "true or false"}
    return names.get(annotation, f"of type {annotation}".replace("typing.", ""))


def _wrong_type(key: str, value: Any, default: Any) -> UserError | None:
    """A one-line error if ``value`` cannot stand where the config has ``default``.

    A number's default (integer or not) asks for a number, true/false for true or false;
    ``trainer.*`` keys follow the Lightning Trainer's own annotations (an integer
    ``max_epochs``, but also ``devices=auto``). Strings, lists, nulls and interpolations are
    not checked."""
    if value is None or (isinstance(value, str) and value.startswith("${")):
        return None
    expected: Any = None
    if isinstance(default, bool):
        expected = bool
    elif isinstance(default, int | float):
        expected = float
    section, _, name = key.partition(".")
    if section == "trainer" and "." not in name:
        import typing

        import lightning

        hints = typing.get_type_hints(lightning.Trainer.__init__)
        expected = hints.get(name, expected)
    if expected is None or _accepts(expected, value):
        return None
    example = str(default).lower() if isinstance(default, bool) else default
    return UserError(
        f"{key}={value!r} is not {_type_name(expected)} (the default is {example}); pass e.g. "
        f"{key}={example if default is not None else '<value>'}"
    )


# Hydra's own flags; those followed by a value, with what they set.
_VALUE_FLAGS = {
    "--cfg": None,
    "-c": None,
    "--package": None,
    "-p": None,
    "--config-name": "name",
    "-cn": "name",
    "--config-dir": "dir",
    "-cd": "dir",
    "--config-path": "path",
    "-cp": "path",
    "--experimental-rerun": None,
}


def _split_argv(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """The key=value arguments, and the config name/dir/path flags (others are skipped)."""
    overrides: list[str] = []
    flags: dict[str, str] = {}
    args = iter(argv)
    for arg in args:
        name, _, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in _VALUE_FLAGS:
            value = inline or next(args, "")
            if _VALUE_FLAGS[name]:
                flags[_VALUE_FLAGS[name]] = value
            continue
        if arg.startswith("-"):
            continue
        overrides.append(arg)
    return overrides, flags


def run_hydra(entry: Callable[[DictConfig], Any], config_dir: Path, config_name: str) -> None:
    """Check the overrides, then run ``entry`` under ``hydra.main``; UserError -> exit 2."""
    overrides, flags = _split_argv(sys.argv[1:])
    primary = Path(flags["path"]).expanduser().resolve() if flags.get("path") else config_dir
    extra = (Path(flags["dir"]).expanduser().resolve(),) if flags.get("dir") else ()
    try:
        check_overrides(primary, flags.get("name", config_name), overrides, extra)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)

    @hydra.main(config_path=str(config_dir), config_name=config_name, version_base="1.3")
    def main(cfg: DictConfig) -> Any:
        try:
            return entry(cfg)
        except KeyboardInterrupt:  # Ctrl-C outside Lightning's loops (set-up, data, writing)
            print("interrupted", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:
            # Hydra's instantiate wraps a constructor's UserError in its own exception.
            user_error = find_user_error(exc)
            if user_error is None:
                raise
            print(f"error: {user_error}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    main()
