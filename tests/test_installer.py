"""``zero-prior install``: link or copy, idempotent, refuses foreign files, uninstall undoes it."""

import pytest

from zero_prior.aitk.checkout import TESTED_COMMIT, package_dir
from zero_prior.aitk.install import CONFIG_FILES, install, uninstall
from zero_prior.cli import main
from zero_prior.errors import ZeroPriorError


@pytest.fixture
def checkout(tmp_path):
    """The three files install checks for; nothing of ai-toolkit is needed to place files."""
    root = tmp_path / "ai-toolkit"
    for name in ("run.py", "toolkit/extension.py", "extensions_built_in/sd_trainer/SDTrainer.py"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    (root / "extensions").mkdir()
    return root


def test_link_install_is_idempotent_and_uninstall_undoes_it(checkout, capsys):
    assert main(["install", "--ai-toolkit", str(checkout)]) == 0
    first = capsys.readouterr().out
    target = checkout / "extensions" / "zero_prior"
    assert target.is_symlink() and target.resolve() == package_dir()
    assert f"tested against {TESTED_COMMIT[:8]}" in first and "linked" in first
    assert sorted(p.name for p in (checkout / "config").iterdir()) == sorted(CONFIG_FILES)
    second = install(checkout).summary()
    assert "already linked" in second and "already present" in second
    report = uninstall(checkout).summary()
    assert "removed" in report and not target.exists() and list((checkout / "config").iterdir()) == []


def test_copy_install_then_switch_to_link(checkout):
    install(checkout, copy=True)
    target = checkout / "extensions" / "zero_prior"
    assert not target.is_symlink() and (target / "weights" / "loader.py").is_file()
    assert "refreshed the copy" in install(checkout, copy=True).summary()
    install(checkout)
    assert target.is_symlink()


def test_refuses_foreign_extension_and_edited_config(checkout):
    (checkout / "config").mkdir()
    (checkout / "config" / CONFIG_FILES[0]).write_text("mine: true\n")
    with pytest.raises(ZeroPriorError, match="zero_prior.yaml exists and differs from zero-prior's example"):
        install(checkout)
    assert not (checkout / "extensions" / "zero_prior").exists()  # nothing written half-way
    (checkout / "config" / CONFIG_FILES[0]).unlink()
    (checkout / "extensions" / "zero_prior").mkdir()
    with pytest.raises(ZeroPriorError, match="was not installed by zero-prior; remove it first"):
        install(checkout)
    assert "not installed by zero-prior" in uninstall(checkout).summary()


def test_refuses_a_folder_that_is_not_ai_toolkit(tmp_path):
    with pytest.raises(ZeroPriorError, match="is not an ai-toolkit checkout \\(missing run.py"):
        install(tmp_path)


@pytest.fixture
def comfyui(tmp_path):
    """The files a ComfyUI checkout is recognised by; nothing of ComfyUI is needed to place the node."""
    from zero_prior.comfyui.checkout import CHECKOUT_FILES

    root = tmp_path / "ComfyUI"
    for name in CHECKOUT_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    return root


def test_comfyui_install_links_the_node_and_uninstall_removes_it(comfyui, capsys):
    from zero_prior.comfyui.checkout import TESTED_COMMIT as COMFYUI_COMMIT

    assert main(["install", "--comfyui", str(comfyui)]) == 0
    first = capsys.readouterr().out
    target = comfyui / "custom_nodes" / "zero_prior"
    assert target.is_symlink() and target.resolve() == package_dir()
    assert f"the node is tested against {COMFYUI_COMMIT[:8]}" in first and "Load zero-prior LoRA" in first
    assert main(["install", "--comfyui", str(comfyui)]) == 0
    assert "already linked" in capsys.readouterr().out
    assert main(["install", "--comfyui", str(comfyui), "--copy"]) == 0
    assert not target.is_symlink() and (target / "comfyui" / "nodes.py").is_file()
    assert main(["install", "--comfyui", str(comfyui), "--uninstall"]) == 0
    assert f"removed {target}" in capsys.readouterr().out and not target.exists()
    assert main(["install", "--comfyui", str(comfyui), "--uninstall"]) == 0
    assert "nothing to remove" in capsys.readouterr().out


def test_comfyui_install_refuses_a_foreign_node_and_a_non_checkout(comfyui, tmp_path, capsys):
    from zero_prior.comfyui.install import install

    (comfyui / "custom_nodes" / "zero_prior").mkdir(parents=True)
    with pytest.raises(ZeroPriorError, match="custom_nodes/zero_prior exists and was not installed by zero-prior"):
        install(comfyui)
    assert main(["install", "--comfyui", str(comfyui), "--uninstall"]) == 0
    assert "not installed by zero-prior" in capsys.readouterr().out
    assert main(["install", "--comfyui", str(tmp_path / "nowhere")]) == 1
    assert "is not a ComfyUI checkout (missing main.py" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["install", "--comfyui", str(comfyui), "--ai-toolkit", str(comfyui)])
