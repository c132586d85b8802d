import worker_runtime_core as core


def test_all_names_exist_and_are_unique() -> None:
    assert len(core.__all__) == len(set(core.__all__))
    for name in core.__all__:
        assert hasattr(core, name), name


def test_public_modules_export_only_what_they_define_or_reexport() -> None:
    from worker_runtime_core import config, errors, ids, models, wire

    for module in (config, errors, ids, models, wire):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_every_module_opens_with_a_docstring_saying_what_it_holds() -> None:
    import ast
    from pathlib import Path

    src = Path(core.__file__).parent
    missing = [
        str(path.relative_to(src))
        for path in sorted(src.rglob("*.py"))
        if path.name != "_version.py" and not ast.get_docstring(ast.parse(path.read_text()))
    ]
    assert missing == []
