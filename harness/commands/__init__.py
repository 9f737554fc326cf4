"""Sub-commands of `iwsft`; see harness/cli.py."""


def labelled_paths(items: list[str], flag: str, require_name: bool = False) -> dict[str, str]:
    """NAME=PATH (or, unless `require_name`, a bare PATH labelled by its folder name) -> {label: path}.
    One label used twice is refused: the two rows would overwrite each other in the report."""
    from pathlib import Path

    from harness.core.errors import UserError

    out: dict[str, str] = {}
    for item in items:
        name, sep, path = (s.strip() for s in item.partition("="))
        if sep and not (name and path) or not sep and require_name:
            form = "NAME=PATH pairs" if require_name else "NAME=PATH or PATH"
            raise UserError(f"{flag} takes {form}, got {item!r} (e.g. iw-sft=runs/tiny/iw-sft/final)")
        if not sep:
            path = item.strip()
            full = Path(path).resolve()
            # an evaluation run folder (OUT/<model>/<benchmark>/<settings hash>) is named by its model
            run = (full / "metrics.json").is_file() and len(full.parents) > 2
            name = full.parents[1].name if run else (Path(path).name or full.name)
        if name in out:
            first = out[name]
            a, b = Path(first).parent.name, Path(path).parent.name
            if not a or not b or a == b:
                a, b = f"{name}-1", f"{name}-2"
            raise UserError(f"{flag} uses the label {name!r} twice ({first} and {path}); label each as NAME=PATH, "
                            f"e.g. {a}={first} {b}={path}")
        out[name] = path
    return out
