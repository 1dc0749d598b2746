"""Configuration: defaults, derived paths, layering of files and flags, every error, and render()."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from pycrio import config
from pycrio.config import ConfigError


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def load_text(tmp_path: Path, text: str | bytes, **kwargs) -> config.Config:
    """Load text as the main config file, with an empty drop-in directory."""
    main = write(tmp_path / "pycrio.conf", text)
    drop_ins = tmp_path / "pycrio.conf.d"
    drop_ins.mkdir(exist_ok=True)
    return config.load(str(main), str(drop_ins), **kwargs)


def load_error(tmp_path: Path, text: str | bytes) -> tuple[ConfigError, str]:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    return info.value, str(tmp_path / "pycrio.conf")


def assert_names(err: ConfigError, source: str, line: int | None, key: str, *expected: str) -> None:
    """err's message names source:line, the dotted key and what was expected."""
    message = str(err)
    where = f"{source}:{line}" if line else source
    assert message.startswith(where + ": "), message
    assert (err.source, err.line) == (source, line)
    if key:
        assert f": {key}: " in message and err.key == key, message
    for text in expected:
        assert text in message, message


# ---------------------------------------------------------------- defaults and derivation


def test_builtin_defaults():
    cfg = config.Config()
    assert (cfg.root, cfg.runroot, cfg.log_level) == ("/var/lib/pycrio", "/run/pycrio", "info")
    assert cfg.runtime.default_runtime == "runc" and list(cfg.runtime.runtimes) == ["runc"]
    assert cfg.runtime.cgroup_manager == "cgroupfs"
    assert cfg.api.listen == "" and cfg.runtime.exits_dir == "" and cfg.runtime.namespaces_dir == ""
    r = cfg.resolved()
    assert r.api.listen == "/run/pycrio/pycrio.sock"
    assert r.runtime.exits_dir == "/run/pycrio/exits"
    assert r.runtime.namespaces_dir == "/run/pycrio/ns"
    assert r.runtime.runtimes["runc"].runtime_root == "/run/pycrio/runtime/runc"
    assert cfg.api.listen == "", "resolved() must not change the original"


def test_missing_default_files_are_fine(tmp_path):
    if os.path.exists(config.DEFAULT_CONFIG_FILE):
        pytest.skip(f"{config.DEFAULT_CONFIG_FILE} exists on this machine")
    assert config.config_files(None, str(tmp_path)) == []
    cfg = config.load(None, str(tmp_path))
    assert cfg == config.Config()


def test_derived_paths_follow_runroot(tmp_path):
    r = load_text(tmp_path, '[pycrio]\nrunroot = "/x/run"\n').resolved()
    assert r.api.listen == "/x/run/pycrio.sock"
    assert r.runtime.exits_dir == "/x/run/exits"
    assert r.runtime.namespaces_dir == "/x/run/ns"
    assert r.runtime.runtimes["runc"].runtime_root == "/x/run/runtime/runc"


def test_explicit_values_win_over_derivation(tmp_path):
    r = load_text(
        tmp_path,
        """
[pycrio]
runroot = "/x/run"
[pycrio.api]
listen = "unix:///s/cri.sock"
[pycrio.runtime]
exits_dir = "/e"
namespaces_dir = "/n"
[pycrio.runtime.runtimes.runc]
runtime_root = "/rr"
""",
    ).resolved()
    assert (r.api.listen, r.runtime.exits_dir, r.runtime.namespaces_dir) == ("unix:///s/cri.sock", "/e", "/n")
    assert r.runtime.runtimes["runc"].runtime_root == "/rr"


# ---------------------------------------------------------------- layering


def test_drop_ins_apply_in_lexical_order_after_main(tmp_path):
    write(tmp_path / "d" / "20-b.conf", '[pycrio]\nroot = "/from-b"\n')
    write(tmp_path / "d" / "10-a.conf", '[pycrio]\nroot = "/from-a"\nrunroot = "/run-a"\n')
    write(tmp_path / "d" / "30-c.conf.bak", '[pycrio]\nroot = "/ignored"\n')
    write(tmp_path / "d" / "README", "not toml at all [[[\n")
    main = write(tmp_path / "main.conf", '[pycrio]\nroot = "/from-main"\nlog_level = "debug"\n')
    files = config.config_files(str(main), str(tmp_path / "d"))
    assert [p.name for p in files] == ["main.conf", "10-a.conf", "20-b.conf"]
    cfg = config.load(str(main), str(tmp_path / "d"))
    assert (cfg.root, cfg.runroot, cfg.log_level) == ("/from-b", "/run-a", "debug")


def test_overrides_win_over_files(tmp_path):
    write(tmp_path / "d" / "10.conf", '[pycrio]\nroot = "/from-drop-in"\n[pycrio.api]\nlisten = "/f.sock"\n')
    main = write(tmp_path / "main.conf", '[pycrio]\nrunroot = "/from-main"\n')
    cfg = config.load(
        str(main),
        str(tmp_path / "d"),
        {"pycrio.root": "/from-flag", "pycrio.api.listen": "/flag.sock", "pycrio.runroot": None},
    )
    assert (cfg.root, cfg.api.listen, cfg.runroot) == ("/from-flag", "/flag.sock", "/from-main")


def test_explicit_missing_main_file_is_an_error(tmp_path):
    missing = tmp_path / "nope.conf"
    with pytest.raises(ConfigError) as info:
        config.load(str(missing), str(tmp_path))
    assert_names(info.value, str(missing), None, "", "cannot read", "No such file")


@pytest.mark.parametrize("kind", ["file", "missing"])
def test_config_dir_must_be_a_directory(tmp_path, kind):
    target = tmp_path / "d"
    if kind == "file":
        write(target, '[pycrio]\nroot = "/x"\n')
    with pytest.raises(ConfigError) as info:
        config.load(None, str(target))
    assert_names(info.value, str(target), None, "", "not a directory")


def test_runtime_handler_tables_merge(tmp_path):
    write(
        tmp_path / "d" / "10-crun.conf",
        '[pycrio.runtime.runtimes.crun]\nruntime_path = "/usr/bin/crun"\n[pycrio.runtime]\ndefault_runtime = "crun"\n',
    )
    main = write(tmp_path / "main.conf", '[pycrio.runtime.runtimes.runc]\nruntime_path = "/opt/runc"\n')
    cfg = config.load(str(main), str(tmp_path / "d"))
    assert sorted(cfg.runtime.runtimes) == ["crun", "runc"]
    assert cfg.runtime.runtimes["runc"].runtime_path == "/opt/runc"
    assert cfg.runtime.runtimes["crun"].runtime_path == "/usr/bin/crun"
    assert cfg.runtime.default_runtime == "crun"
    assert config.Config().runtime.runtimes["runc"].runtime_path == "", "defaults must not be mutated"


@pytest.mark.parametrize(
    ("given", "level"), [("WARN", "warning"), ("trace", "debug"), ("Fatal", "error"), ("DEBUG", "debug")]
)
def test_log_level_aliases(tmp_path, given, level):
    assert load_text(tmp_path, f'[pycrio]\nlog_level = "{given}"\n').log_level == level
    assert config.load(None, str(tmp_path / "pycrio.conf.d"), {"pycrio.log_level": given}).log_level == level


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "line", "key", "expected"),
    [
        (
            '[pycrio]\nroot = "/x"\n\n[pycrio.api]\nbogus = 1\n',
            5,
            "pycrio.api.bogus",
            ["unknown option", "grpc_max_msg_size, listen"],
        ),
        ('[pycrio]\nroot = "/x"\nbogus = 1\n', 3, "pycrio.bogus", ["unknown option", "root, runroot"]),
        ("# c\n[pycrio.bogus]\nx = 1\n", 2, "pycrio.bogus", ["unknown option"]),
        ('[pycrio]\nroot = "/x"\n[other]\nx = 1\n', 3, "other", ["unknown table", "[pycrio]"]),
        (
            '[pycrio.api]\ngrpc_max_msg_size = "big"\n',
            2,
            "pycrio.api.grpc_max_msg_size",
            ["expected an integer", "str 'big'"],
        ),
        ("[pycrio]\n\nroot = 5\n", 3, "pycrio.root", ["expected a string", "int 5"]),
        (
            "[pycrio.api]\n\n\ngrpc_max_msg_size = true\n",
            4,
            "pycrio.api.grpc_max_msg_size",
            ["expected an integer", "bool True"],
        ),
        (
            '[pycrio.runtime]\ndefault_capabilities = ["CHOWN", 3]\n',
            2,
            "pycrio.runtime.default_capabilities",
            ["expected a list of strings"],
        ),
        (
            '[pycrio.runtime]\ncgroup_manager = "foo"\n',
            2,
            "pycrio.runtime.cgroup_manager",
            ["expected one of 'cgroupfs', 'systemd'", "'foo'"],
        ),
        ('[pycrio]\nroot = "var/lib/pycrio"\n', 2, "pycrio.root", ["expected an absolute path", "'var/lib/pycrio'"]),
        (
            '[pycrio.runtime.runtimes.crun]\nruntime_root = "rel"\n',
            2,
            "pycrio.runtime.runtimes.crun.runtime_root",
            ["expected an absolute path"],
        ),
        ("[pycrio.api]\ngrpc_max_msg_size = -1\n", 2, "pycrio.api.grpc_max_msg_size", ["non-negative"]),
        ('[pycrio]\nlog_level = "loud"\n', 2, "pycrio.log_level", ["expected one of 'error', 'warning'", "'loud'"]),
        (
            '[pycrio]\nroot = "/x"\n\n[pycrio.runtime]\ndefault_runtime = "kata"\n',
            5,
            "pycrio.runtime.default_runtime",
            ["no configured runtime handler", "configured: runc"],
        ),
    ],
    ids=[
        "unknown-nested",
        "unknown-top-level",
        "unknown-nested-table",
        "unknown-table",
        "str-for-int",
        "int-for-str",
        "bool-for-int",
        "list-non-str",
        "bad-choice",
        "relative-path",
        "relative-handler-path",
        "negative",
        "bad-log-level",
        "unknown-default-runtime",
    ],
)
def test_error_names_file_line_key_and_expectation(tmp_path, text, line, key, expected):
    err, source = load_error(tmp_path, text)
    assert_names(err, source, line, key, *expected)


def test_allowed_devices_default_empty_absolute_and_listed_once(tmp_path):
    assert config.Config().runtime.allowed_devices == []
    cfg = load_text(tmp_path, '[pycrio.runtime]\nallowed_devices = ["/dev/fuse", "/dev/net/tun"]\n')
    assert cfg.runtime.allowed_devices == ["/dev/fuse", "/dev/net/tun"]
    key = "pycrio.runtime.allowed_devices"
    err, source = load_error(tmp_path, '[pycrio.runtime]\n\nallowed_devices = ["/dev/fuse", "dev/kvm"]\n')
    assert_names(err, source, 3, key, "expected absolute paths", "'dev/kvm'")
    err, source = load_error(tmp_path, '[pycrio.runtime]\nallowed_devices = ["/dev/fuse", "/dev//fuse/"]\n')
    assert_names(err, source, 2, key, "/dev/fuse listed more than once")
    err, source = load_error(tmp_path, '[pycrio.runtime]\nallowed_devices = "/dev/fuse"\n')
    assert_names(err, source, 2, key, "expected a list of strings")


def test_default_runtime_error_names_the_drop_in_that_set_it(tmp_path):
    write(tmp_path / "d" / "10.conf", "[pycrio.runtime.runtimes.kata]\n")
    write(tmp_path / "d" / "20.conf", '[pycrio.runtime]\n# kata is in 10.conf\ndefault_runtime = "kata"\n')
    cfg = config.load(None, str(tmp_path / "d"))
    assert cfg.runtime.default_runtime == "kata"
    bad = write(tmp_path / "d" / "30.conf", '\n[pycrio.runtime]\ndefault_runtime = "gvisor"\n')
    with pytest.raises(ConfigError) as info:
        config.load(None, str(tmp_path / "d"))
    assert_names(info.value, str(bad), 3, "pycrio.runtime.default_runtime", "configured: kata, runc")


def test_invalid_toml_names_the_line(tmp_path):
    err, source = load_error(tmp_path, '[pycrio]\nroot = "/x"\nlog_level = \n')
    assert_names(err, source, 3, "", "invalid TOML")


def test_non_utf8_file(tmp_path):
    err, source = load_error(tmp_path, b'[pycrio]\nroot = "/caf\xe9"\n')
    assert_names(err, source, 2, "", "not UTF-8")


def test_override_errors_name_the_command_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        config.load(None, str(tmp_path), {"pycrio.runroot": "relative/run"})
    assert_names(info.value, "command line", None, "pycrio.runroot", "expected an absolute path")


# ---------------------------------------------------------------- render


def test_render_round_trips(tmp_path):
    cfg = load_text(
        tmp_path,
        """
[pycrio]
root = "/srv/caf\u00e9 \\"q\\" \\\\ x"
log_level = "warn"
[pycrio.runtime]
default_runtime = "crun"
cgroup_manager = "systemd"
default_capabilities = []
[pycrio.runtime.runtimes.crun]
runtime_path = "/usr/bin/crun"
""",
    )
    for original in (cfg, cfg.resolved(), config.Config()):
        out = write(tmp_path / "rendered" / "out.conf", config.render(original))
        back = config.load(str(out), str(tmp_path / "pycrio.conf.d"))
        assert back == original
        assert back.resolved() == original.resolved()


def test_render_documents_every_option():
    text = config.render(config.Config().resolved())
    for doc, default, line in [
        ("# Persistent state: images, layers", '# Default: "/var/lib/pycrio"', 'root = "/var/lib/pycrio"'),
        (
            "# Unix socket the CRI is served on",
            "# Default: <runroot>/pycrio.sock",
            'listen = "/run/pycrio/pycrio.sock"',
        ),
        ("# Cgroup driver", '# Default: "cgroupfs"', 'cgroup_manager = "cgroupfs"'),
        (
            "# State directory passed to the runtime",
            "# Default: <runroot>/runtime/<name>",
            'runtime_root = "/run/pycrio/runtime/runc"',
        ),
    ]:
        assert re.search(rf"^{re.escape(doc)}.*\n(#.*\n)*{re.escape(default)}\n{re.escape(line)}$", text, re.M), doc
    assert "# One of: cgroupfs, systemd." in text
    assert "[pycrio.runtime.runtimes.runc]" in text
    names = re.findall(r"^(\w+) = ", text, re.M)
    assert names.count("root") == 1 and len(names) == text.count("# Default: ")


# ---------------------------------------------------------------- [pycrio.metrics]


def test_metrics_are_off_by_default_on_localhost_9090(tmp_path):
    cfg = load_text(tmp_path, "")
    assert (cfg.metrics.enable_metrics, cfg.metrics.metrics_host, cfg.metrics.metrics_port) == (
        False,
        "127.0.0.1",
        9090,
    )


@pytest.mark.parametrize(
    "line,key,expected",
    [
        ('metrics_host = "localhost"', "pycrio.metrics.metrics_host", "expected an IP address"),
        ("metrics_port = 70000", "pycrio.metrics.metrics_port", "between 0 and 65535"),
        ("metrics_port = -1", "pycrio.metrics.metrics_port", "non-negative integer"),
        ('enable_metrics = "yes"', "pycrio.metrics.enable_metrics", "true or false"),
    ],
)
def test_bad_metrics_settings_are_refused(tmp_path, line, key, expected):
    err, _ = load_error(tmp_path, f"[pycrio.metrics]\n{line}\n")
    assert err.key == key and expected in str(err), str(err)
