"""The confusion PNG's font list: an installed CJK font is used for Chinese class names; without one, one
warning line (the CI machine has none, so the found branch is checked against a registered stand-in)."""

import dataclasses

from matplotlib import font_manager

from domainvlm.evaluate.plots import _fonts


def test_an_installed_cjk_font_is_chosen_and_nothing_is_warned(monkeypatch, capsys):
    dejavu = next(f for f in font_manager.fontManager.ttflist if f.name == "DejaVu Sans")
    stand_in = dataclasses.replace(dejavu, name="WenQuanYi Zen Hei")
    monkeypatch.setattr(font_manager.fontManager, "ttflist", [*font_manager.fontManager.ttflist, stand_in])
    assert _fonts(["裂纹", "Crack"], "c.png") == ["DejaVu Sans", "WenQuanYi Zen Hei"]
    assert capsys.readouterr().err == ""


def test_without_a_cjk_font_chinese_names_warn_once_and_latin_names_not_at_all(monkeypatch, capsys):
    from domainvlm.evaluate.plots import CJK_FONTS

    kept = [f for f in font_manager.fontManager.ttflist if f.name not in CJK_FONTS]
    monkeypatch.setattr(font_manager.fontManager, "ttflist", kept)
    assert _fonts(["Crack", "Kratzer-ä"], "c.png") == ["DejaVu Sans"]
    assert capsys.readouterr().err == ""
    assert _fonts(["裂纹"], "c.png") == ["DejaVu Sans"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "c.png: no font with CJK glyphs" in err
