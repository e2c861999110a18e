"""Stack discovery, bracket grouping, exposure ratios and the bad inputs of the foundation issue."""

from datetime import datetime, timedelta

import cv2
import numpy as np
import pytest
from conftest import camera, smooth_scene, write_bracket_files

from fusecli.discover import GroupOptions, discover
from fusecli.errors import FuseError
from fusecli.exposure import estimate_ratios
from fusecli.stack import load_stack

AEB = [1 / 64, 1 / 256, 1 / 16]  # a camera's AEB order: 0, -2, +2 EV


def _card_dump(folder, brackets=3, times=True, stamps=True):
    """brackets x 3 DNGs named IMG_0001.dng ... as a camera writes them, AEB order, 30 s apart."""
    scene = smooth_scene()
    n = 1
    for b in range(brackets):
        names = [f"IMG_{n + k:04d}.dng" for k in range(3)]
        start = datetime(2026, 5, 1, 10, 0, 0) + timedelta(seconds=30 * b if stamps else 0)
        write_bracket_files(
            folder,
            scene,
            [t * 16 for t in AEB],
            times=AEB if times else None,
            start=start,
            names=names,
            step_s=1.0 if stamps else 0.0,
        )
        n += 3


def test_flat_folder_of_three_interleaved_brackets_is_grouped(tmp_path):
    _card_dump(tmp_path)
    sources = discover([tmp_path])
    assert [s.name for s in sources] == ["IMG_0001", "IMG_0004", "IMG_0007"]
    assert [[f.path.name for f in s.frames] for s in sources][1] == ["IMG_0004.dng", "IMG_0005.dng", "IMG_0006.dng"]
    assert sources[1].notes == (
        "bracket 2 of 3 in the folder: IMG_0004.dng: a new series "
        "(the exposure of IMG_0004.dng repeats IMG_0001.dng's)",
        "one scene: structure IMG_0005.dng 1.00, IMG_0006.dng 1.00",
    )
    stack = load_stack(sources[2])
    # brightest first: the +2 EV frame (the third shot) is the reference
    assert [i.path.name for i in stack.infos] == ["IMG_0009.dng", "IMG_0007.dng", "IMG_0008.dng"]
    assert stack.ratios == pytest.approx([1, 0.25, 0.0625]) and stack.ratio_source == "exif"


def test_repeated_exposures_split_brackets_without_time_gaps(tmp_path):
    _card_dump(tmp_path, stamps=False)  # all frames stamped with the same second
    assert [len(s.frames) for s in discover([tmp_path])] == [3, 3, 3]


def test_group_size_overrides_when_there_is_no_metadata(tmp_path):
    _card_dump(tmp_path, times=False, stamps=False)
    [whole] = discover([tmp_path])  # nothing tells brackets apart: one stack
    assert len(whole.frames) == 9
    sources = discover([tmp_path], GroupOptions(group_size=3))
    assert [len(s.frames) for s in sources] == [3, 3, 3]
    with pytest.raises(FuseError, match="9 frames do not split into brackets of --group-size 4"):
        discover([tmp_path], GroupOptions(group_size=4))


def test_folder_of_stack_folders_with_labels(tmp_path):
    from fusecli.io.image import write_label

    for name in ("b", "a"):
        write_bracket_files(tmp_path / name, smooth_scene(), [1, 0.25, 0.0625], times=[1 / 8, 1 / 32, 1 / 128])
        write_label(tmp_path / name / "label.tif", np.zeros((4, 48, 64), np.float32))
    sources = discover([tmp_path])
    assert [s.name for s in sources] == ["a", "b"]
    assert all(s.label is not None and s.label.name == "label.tif" for s in sources)
    stack = load_stack(sources[0])
    assert stack.read_label().shape == (4, 48, 64)


def test_label_of_the_wrong_size_is_refused_by_name(tmp_path):
    from fusecli.io.image import write_label

    write_bracket_files(tmp_path, smooth_scene(), [1, 0.25], times=[1 / 8, 1 / 32])
    write_label(tmp_path / "label.tif", np.zeros((4, 10, 10), np.float32))
    stack = load_stack(discover([tmp_path])[0])
    with pytest.raises(FuseError, match=r"label\.tif: label of shape .* does not match the frames' \(4, 48, 64\)"):
        stack.read_label()


def test_raw_plus_jpeg_keeps_the_raw(tmp_path):
    write_bracket_files(tmp_path, smooth_scene(), [1, 0.25], times=[1 / 8, 1 / 32])
    for name in ("IMG_0001.jpg", "IMG_0002.jpg"):
        cv2.imwrite(str(tmp_path / name), np.zeros((48, 64, 3), np.uint8))
    [source] = discover([tmp_path])
    assert [f.path.suffix for f in source.frames] == [".dng", ".dng"]
    assert any("duplicate a RAW" in n for n in source.notes)


def test_explicit_files_and_user_ratios(tmp_path):
    paths = write_bracket_files(tmp_path, smooth_scene(), [1, 0.25, 0.0625])  # no exposure tags
    [source] = discover(paths)
    stack = load_stack(source, ratios=[1, 0.3, 0.1])
    assert stack.ratio_source == "user" and stack.ratios == (1, 0.3, 0.1)
    assert [i.path.name for i in stack.infos] == ["IMG_0001.dng", "IMG_0002.dng", "IMG_0003.dng"]
    estimated = load_stack(source)
    assert estimated.ratio_source == "estimated" and estimated.ratios == pytest.approx([1, 0.25, 0.0625], rel=0.02)
    with pytest.raises(FuseError, match="--ratios gives 2 values but stack IMG_0001 has 3 frames"):
        load_stack(source, ratios=[1, 0.5])
    with pytest.raises(FuseError, match="strictly decreasing"):
        load_stack(source, ratios=[1, 0.5, 0.7])


def test_estimate_ratios_on_noisy_synthetic_frames():
    rng = np.random.default_rng(0)
    scene = rng.uniform(0.01, 8.0, (4, 64, 64))
    frames = np.stack(
        [np.clip(scene * r + rng.normal(0, 0.002, scene.shape), 0, 1) for r in (1, 1 / 8, 1 / 64)]
    ).astype(np.float32)
    ratios, warnings = estimate_ratios(frames)
    assert ratios == pytest.approx([1, 1 / 8, 1 / 64], rel=0.03) and warnings == []
    # nothing well exposed in both: the step is assumed (2 EV) and said
    ratios, warnings = estimate_ratios(np.zeros((2, 1, 8, 8), np.float32))
    assert ratios == [1.0, 0.25] and "assumed 0.25 (2.0 EV)" in warnings[0]


# --- bad input: one line naming the file and the problem ----------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(FuseError, match=r"nowhere: no such file or folder"):
        discover([tmp_path / "nowhere"])


def test_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(FuseError, match="no RAW, TIFF, PNG or JPEG frames"):
        discover([tmp_path])


def test_explicit_file_that_is_not_an_image(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(FuseError, match=r"a\.txt: not a supported image type"):
        discover([tmp_path / "a.txt"])


def test_one_frame_stack(tmp_path):
    write_bracket_files(tmp_path, smooth_scene(), [1], times=[1 / 8])
    [source] = discover([tmp_path])
    with pytest.raises(FuseError, match=r"IMG_0001\.dng: stack .* has only 1 frame"):
        load_stack(source)


def test_frames_of_different_sizes(tmp_path):
    write_bracket_files(tmp_path, smooth_scene(), [1], times=[1 / 8])
    write_bracket_files(tmp_path, smooth_scene(64, 64), [0.25], times=[1 / 32], names=["IMG_0002.dng"])
    (tmp_path / "exposures.txt").write_text("IMG_0001.dng 1/8\nIMG_0002.dng 1/32\n")  # declares one stack
    [source] = discover([tmp_path])
    with pytest.raises(FuseError, match=r"IMG_0002\.dng: size 32x32 differs from IMG_0001\.dng's 64x48"):
        load_stack(source)


def test_frames_of_different_cameras(tmp_path):
    write_bracket_files(tmp_path, smooth_scene(), [1], times=[1 / 8])
    write_bracket_files(
        tmp_path, smooth_scene(), [0.25], cam=camera(model="other"), times=[1 / 32], names=["IMG_0002.dng"]
    )
    (tmp_path / "exposures.txt").write_text("IMG_0001.dng 1/8\nIMG_0002.dng 1/32\n")
    with pytest.raises(FuseError, match=r"IMG_0002\.dng: camera fusecli other differs"):
        load_stack(discover([tmp_path])[0])


def test_frames_with_the_same_exposure_are_kept_but_a_stack_of_one_exposure_is_refused(tmp_path):
    write_bracket_files(tmp_path, smooth_scene(), [1, 0.25, 0.25], times=[1 / 8, 1 / 32, 1 / 32])
    (tmp_path / "exposures.txt").write_text("IMG_0001.dng 1/8\nIMG_0002.dng 1/32\nIMG_0003.dng 1/32\n")
    stack = load_stack(discover([tmp_path])[0])  # as the irisowo bracket: two frames of one exposure
    assert stack.ratios == pytest.approx([1, 0.25, 0.25])
    assert "IMG_0003.dng has the exposure of IMG_0002.dng: both are fused" in stack.notes
    same = tmp_path / "same"
    write_bracket_files(same, smooth_scene(), [1, 0.25, 0.25], times=[1 / 8, 1 / 8, 1 / 8])
    (same / "exposures.txt").write_text("IMG_0001.dng 1/8\nIMG_0002.dng 1/8\nIMG_0003.dng 1/8\n")  # one stack
    with pytest.raises(FuseError, match=r"IMG_0002\.dng: same exposure as IMG_0001\.dng .* as every frame"):
        load_stack(discover([same])[0])


def test_equal_looking_frames_without_metadata(tmp_path):
    write_bracket_files(tmp_path, smooth_scene(), [0.25, 0.25])
    with pytest.raises(FuseError, match="look equally exposed"):
        load_stack(discover([tmp_path])[0])
