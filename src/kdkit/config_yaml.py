"""Config files: YAML read safely (no aliases, no repeated keys, one-line errors naming the file) and
written back; `--set key=value` pairs; the mappings of keyword arguments (model_kwargs) that both
YAML and a weights sidecar's JSON hold as they are. The keys and their values are checked by kdkit.config."""
import dataclasses
import keyword
import math
import re
from pathlib import Path

import yaml

from kdkit.errors import KdkitError, shown


class _Refused(yaml.YAMLError):
    """YAML that a kdkit config does not take; args: (what it is, the fix, its line)."""


class ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases outright (a 301-byte file of nested aliases expands to gigabytes;
    a config needs none) and repeated keys (YAML silently keeps the last one)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(f"uses the YAML alias {shown('*' + str(event.anchor))}", "write the value out "
                           "(kdkit takes no YAML aliases: a few bytes of them can expand to gigabytes)",
                           event.start_mark.line + 1)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        first = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                line = key_node.start_mark.line + 1
                if key_node.value in first:
                    raise _Refused(f"repeats key {shown(key_node.value)} (lines {first[key_node.value]} and {line})",
                                   "keep one", line)
                first[key_node.value] = line
        return super().construct_mapping(node, deep)


def parse_set(pairs: list[str]) -> dict:
    """['lr=0.1', 'seeds=0,1'] -> {'lr': '0.1', 'seeds': '0,1'}."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise KdkitError(f"--set expects key=value, got {shown(pair)}; e.g. --set lr=0.1")
        key, value = pair.split("=", 1)
        try:
            parsed = yaml.load(value, Loader=ConfigLoader) if value.strip() else ""
            # YAML 1.1 turns off/on/yes/no into booleans; keep the word (a bool key still reads it)
            out[key.strip()] = value.strip() if isinstance(parsed, bool) else parsed
        except _Refused as e:
            raise KdkitError(f"--set {_cut(key.strip(), 60)}: the value {e.args[0]}; {e.args[1]}") from None
        except (yaml.YAMLError, ValueError, RecursionError):  # not YAML (e.g. '@run', '[0.1'): the text
            out[key.strip()] = value  # itself, still type-checked against the key's field
    return out


def keyword_arguments(key: str, value) -> dict:
    """The value of a mapping key (model_kwargs): keyword arguments for a model's factory, checked.
    Names must be Python parameter names; values numbers, text, true/false, null, or lists and
    mappings of these (a tuple becomes a list), so config.yaml and the weights' sidecar keep them."""
    if value is None or value == "":  # `key:` with nothing after it, or `--set key=`
        return {}
    if not isinstance(value, dict):
        raise KdkitError(f"config key '{key}' expects a mapping of keyword arguments, got {shown(value)}; "
                         f"e.g. --set {key}='{{model_name: resnet18}}'")
    for name in value:
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise KdkitError(f"config key '{key}' names the argument {shown(name)}, which is not a Python parameter "
                             "name; use names like model_name or num_classes")
    try:
        return {name: _plain(item) for name, item in value.items()}
    except ValueError as bad:
        raise KdkitError(f"config key '{key}' holds {shown(bad.args[0])}; give numbers, text, true/false, null, "
                         "or lists and mappings of these") from None


def _plain(value, depth: int = 0):
    """`value` as JSON and YAML hold it (tuples as lists), or ValueError(the part that is not)."""
    if isinstance(value, (tuple, list)) and depth < 16:
        return [_plain(item, depth + 1) for item in value]
    if isinstance(value, dict) and depth < 16 and all(isinstance(k, str) for k in value):
        return {k: _plain(item, depth + 1) for k, item in value.items()}
    if value is None or isinstance(value, bool):
        return value
    fits = (isinstance(value, int) and abs(value) < 2**63
            or isinstance(value, float) and math.isfinite(value)
            or isinstance(value, str) and len(value) <= 4096 and not re.search(r"[\x00-\x1f\x7f]", value))
    if not fits:
        raise ValueError(value)
    return value


def _cut(text, limit: int = 100) -> str:
    """A file name or key as messages show it: at most `limit` characters."""
    text = str(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def load_yaml(path) -> dict:
    path, name = Path(path), _cut(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, ValueError) as e:
        if isinstance(e, UnicodeDecodeError):
            raise KdkitError(f"config file '{name}' is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
        raise KdkitError(f"config file '{name}' not found; check the path") from None
    except OSError as e:  # permissions, a name too long, ...
        raise KdkitError(f"cannot read config file '{name}' ({e.strerror or e}); check the path") from None
    try:
        data = yaml.load(text, Loader=ConfigLoader)
    except _Refused as e:
        what, fix, line = e.args
        where = "" if "line" in what else f" at line {line}"
        raise KdkitError(f"config file '{name}' {what}{where}; {fix}") from None
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise KdkitError(f"config file '{name}' is not valid YAML{where}; fix the syntax") from None
    except (ValueError, RecursionError) as e:  # a date like 2024-13-01, an integer of 5000 digits, deep nesting
        why = "nested too deeply" if isinstance(e, RecursionError) else str(e).split(":")[0].split(";")[0][:60]
        raise KdkitError(f"config file '{name}' has a value YAML cannot convert ({why}); fix or quote it") from None
    if data is not None and not isinstance(data, dict):
        raise KdkitError(f"config file '{name}' must be a mapping of key: value, got {type(data).__name__}; "
                         "write one key: value per line, e.g. epochs: 10")
    return data or {}


def dump_yaml(cfg) -> str:
    """A config as YAML: what config.yaml holds, and what --config takes back as it is."""
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)


def save_yaml(cfg, path):
    Path(path).write_text(dump_yaml(cfg))
