"""The editing tabs' DDIM steps (``ui.edit_tab.edit_steps``): the Steps setting's default runs each task as tuned."""

from __future__ import annotations

import pytest

from pipeline import edit
from ui import edit_tab
from ui.config import AppConfig

TUNED = (edit.RemoveConfig(), edit.TransferConfig(), edit.SaliencyConfig(), edit.BlendConfig())


@pytest.mark.parametrize("cfg", TUNED, ids=lambda c: type(c).__name__)
def test_default_setting_runs_the_tuned_steps(cfg):
    assert AppConfig().steps == edit_tab.TUNED_AT_STEPS  # the page opens at the setting the steps were tuned for
    assert edit_tab.edit_steps(cfg, cfg.t_edit, AppConfig().steps) == cfg.num_steps


def test_steps_scale_with_depth_and_setting():
    cfg = edit.RemoveConfig()  # tuned: 10 steps to t_edit 200, a step of 20 timesteps
    assert edit_tab.edit_steps(cfg, 400, 20) == 20  # twice as deep: twice the steps, the same step size
    assert edit_tab.edit_steps(cfg, 200, 40) == 20  # twice the setting: half the step size
    assert edit_tab.edit_steps(cfg, 200, 5) == 2
    assert edit_tab.edit_steps(cfg, 50, 2) == 1  # never below one step
    fine = edit.RemoveConfig(t_edit=10, num_steps=10)  # tuned at one timestep a step
    assert edit_tab.edit_steps(fine, 6, 40) == 6  # never more steps than timesteps


def test_the_edit_call_uses_them():
    class Run:  # the parts of ui.models.Run the keyword arguments read
        steps, seed, progress, cancel = 20, 0, None, None

    opts = edit_tab.EditOptions(t_edit=250, iterations=3, measure=True)
    kw = opts.library_kwargs(Run(), edit.BlendConfig())
    assert kw["num_steps"] == edit.BlendConfig().num_steps and kw["t_edit"] == 250 and kw["iterations"] == 3
