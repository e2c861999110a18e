"""The fusion's look on a real bracket: local structure and global contrast against OpenCV's Mertens
fusion, scored as bench/real_brackets.py scores them (docs/evaluation.md)."""

import numpy as np
import torch

from fusecli.baselines import mertens_display
from fusecli.develop import display
from fusecli.discover import discover
from fusecli.evaluate import contrast_display, mef_scorer, mef_ssim_display
from fusecli.fuse import fuse_stack
from fusecli.model import load_model
from fusecli.stack import StackOptions, open_stack


def test_a_backlit_interior_keeps_more_structure_than_mertens_and_its_contrast(real):
    """katm10_design: MEF-SSIM at 1024 px 0.947 against Mertens's 0.928 (bench/results/real_brackets.json),
    global contrast 0.245 against 0.240: the windows' detail and the room's depth both kept."""
    bracket = real("../brackets/katm10_design")  # MIT-licensed: a room against bright windows, 7 frames
    stack = open_stack(discover([bracket])[0], StackOptions())
    frames = np.stack([display(f, stack) for f in stack.frames])
    fused = display(fuse_stack(load_model()[0], stack, torch.device("cpu"))[0], stack)
    mertens = mertens_display(frames)
    scorer = mef_scorer(frames)
    ours, theirs = mef_ssim_display(scorer, fused), mef_ssim_display(scorer, mertens)
    assert ours > theirs + 0.01
    assert contrast_display(fused) >= contrast_display(mertens)
    assert fused.mean() < frames[0].mean()  # darker than the brightest frame: the room is not lit up
