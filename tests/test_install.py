"""`pip install .` (pyproject.toml) and `make` (Makefile) install the same things, and the `fineweb`
command is the same program as `python fineweb.py`. Offline and cheap: nothing is built or installed.

The requirements*.txt files are the single source of truth for dependencies: pyproject.toml reads them
(setuptools' dynamic `file`), the Makefile installs them.
"""
import importlib
import importlib.util
import re
import signal
import sys
import tomllib
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
DYNAMIC = PYPROJECT["tool"]["setuptools"]["dynamic"]


def files_of(extra=None):
    """The requirements files pyproject.toml reads for the runtime dependencies or for an extra."""
    if extra is None:
        return DYNAMIC["dependencies"]["file"]
    return DYNAMIC["optional-dependencies"][extra]["file"]


def requirement_lines(names):
    out = []
    for name in names:
        for line in (REPO / name).read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def normalized(reqs):
    """{(name, specifier, marker)} from requirement strings, whatever spelling a tool chose."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    out = set()
    for r in map(Requirement, reqs):
        out.add((canonicalize_name(r.name), str(r.specifier), str(r.marker) if r.marker else None))
    return out


def test_pyproject_takes_its_dependencies_from_the_requirements_files():
    assert {"dependencies", "optional-dependencies"} <= set(PYPROJECT["project"]["dynamic"])
    # no second, static list in pyproject.toml that could drift from the files
    assert "dependencies" not in PYPROJECT["project"]
    assert "optional-dependencies" not in PYPROJECT["project"]
    assert files_of() == ["requirements.txt"]
    assert files_of("ray") == ["requirements-ray.txt"]
    assert files_of("s3") == ["requirements-s3.txt"]
    assert files_of("azure") == ["requirements-azure.txt"]
    # [dev] is everything `make test` / `make bench` need, the Ray and bucket tests included
    assert set(files_of("dev")) == {"requirements-dev.txt", "requirements-ray.txt", "requirements-s3.txt",
                                    "requirements-azure.txt"}


def test_make_installs_the_files_pyproject_declares():
    reqs = dict(re.findall(r"^REQS_(\w+)\s*:?=\s*(.*)$", (REPO / "Makefile").read_text(), re.M))
    assert reqs["runtime"].split() == files_of()
    assert set(reqs["dev"].split()) == set(files_of()) | set(files_of("dev"))


def test_requirements_files_hold_only_requirement_lines():
    # setuptools reads them line by line: a pip option there (-r, -c, -e, --hash ...) breaks `pip install .`
    pytest.importorskip("packaging")
    names = set(files_of()) | {f for extra in DYNAMIC["optional-dependencies"] for f in files_of(extra)}
    for name in sorted(names):
        lines = requirement_lines([name])
        assert lines, f"{name} is empty"
        assert not [line for line in lines if line.startswith("-")], f"{name}: pip options are not read by setuptools"
        normalized(lines)  # each is a PEP 508 requirement (raises otherwise)
    # the platform marker on fastokens survives into the package metadata
    assert any(";" in line and line.startswith("fastokens") for line in requirement_lines(["requirements.txt"]))


def test_setuptools_reads_the_same_metadata():
    """What `pip install .` would declare, expanded by setuptools itself (no build, no network)."""
    pytest.importorskip("packaging")
    pyprojecttoml = pytest.importorskip("setuptools.config.pyprojecttoml")
    from setuptools.dist import Distribution

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "beta" notices for dynamic optional-dependencies in some versions
        dist = pyprojecttoml.apply_configuration(Distribution(), str(REPO / "pyproject.toml"))
    # older setuptools moves a marker-guarded requirement to extras_require[":marker"]
    runtime, extras = list(dist.install_requires), {}
    for key, reqs in dist.extras_require.items():
        extra, _, marker = key.partition(":")
        reqs = [f"{r}; {marker}" if marker else r for r in reqs]
        if extra:
            extras.setdefault(extra, []).extend(reqs)
        else:
            runtime.extend(reqs)
    assert normalized(runtime) == normalized(requirement_lines(files_of()))
    assert set(extras) == set(DYNAMIC["optional-dependencies"])
    for extra in extras:
        assert normalized(extras[extra]) == normalized(requirement_lines(files_of(extra))), extra
    # every package under tokshards/ gets installed (a new subpackage needs no edit of pyproject.toml)
    wanted = {".".join(d.relative_to(REPO).parts) for d in [REPO / "tokshards", *(REPO / "tokshards").rglob("*")]
              if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py"))}
    assert wanted <= set(dist.packages)
    assert not [p for p in dist.packages if not p.startswith("tokshards")]


def run_as_command(func, args, monkeypatch, capsys):
    """Call func the way a console script does: no arguments, the command line in sys.argv."""
    monkeypatch.setattr(sys, "argv", ["fineweb", *args])
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as e:
            sys.exit(func())
    finally:  # the command may set its own; they must not outlive it in this process
        for sig, h in handlers.items():
            signal.signal(sig, h)
    return e.value.code, capsys.readouterr().out


def test_fineweb_command_is_the_script(monkeypatch, capsys):
    module, _, func = PYPROJECT["project"]["scripts"]["fineweb"].partition(":")
    command = getattr(importlib.import_module(module), func)
    spec = importlib.util.spec_from_file_location("fineweb_script", REPO / "fineweb.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)  # runs its imports, not its __main__ block
    # `fineweb ARGS` is `python fineweb.py ARGS`: the same answer to --help (a broken entry point fails here)
    code, out = run_as_command(command, ["--help"], monkeypatch, capsys)
    assert (code, out) == run_as_command(script.main, ["--help"], monkeypatch, capsys)
    assert code in (0, None) and "--remote" in out
