"""Reading the JSON and YAML files a user hands havoc (configs, task sets) without trusting their shape.

Every failure becomes one error of the caller's type that names the file and says what is wrong in a
bounded number of characters: text that is not UTF-8, nesting too deep for the parser (a config.json
nested 100,000 deep raised RecursionError), and YAML aliases, which let 1.2 KB expand into a structure
whose printing took 226 MB (the "billion laughs"); havoc's configs never need them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from havoc.errors import ConfigError

MAX_CONFIG_BYTES = 16 << 20  # a run config or model config is a few KB; a task set at most a few MB


def short(value: Any, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters: messages name a value, they never echo kilobytes of it."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_text(path: str | Path, what: str = "file", error: type[Exception] = ConfigError) -> str:
    """The UTF-8 text of `path`, or `error` saying why it cannot be read."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise error(f"{what} {path} has {size} bytes; at most {MAX_CONFIG_BYTES} are read")
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{what} {path} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from None


def load_json(text: str, what: str = "config", error: type[Exception] = ConfigError) -> Any:
    """json.loads, with malformed or too deeply nested text as `error`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{what} is not valid JSON: {e}") from None
    except RecursionError:
        raise error(f"{what} is nested too deeply to read") from None


def _no_alias_loader():
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted", mark)
            return super().compose_node(parent, index)

    return NoAliasLoader


def load_yaml(text: str, what: str = "config", error: type[Exception] = ConfigError) -> Any:
    """yaml.safe_load without aliases, with malformed or too deeply nested text as `error`."""
    import yaml

    try:
        return yaml.load(text, Loader=_no_alias_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise error(f"{what} is not valid YAML: {str(e)[:300]}") from None
    except RecursionError:
        raise error(f"{what} is nested too deeply to read") from None
