import numpy as np
import pytest

from microarch import qc


def _scan():
    _, y, x = np.indices((10, 40, 48))
    outer = ((y - 20) / 16) ** 2 + ((x - 24) / 20) ** 2 <= 1
    inner = ((y - 20) / 12) ** 2 + ((x - 24) / 16) ** 2 <= 1
    image = np.where(outer & ~inner, 1000.0, 30.0).astype(np.float32)
    return image, outer, inner


def test_montage_writes_png_with_overlays(tmp_path):
    image, outer, inner = _scan()
    path = tmp_path / "qc" / "scan.png"
    figure = qc.montage(image, spacing=(0.082, 0.082, 0.061), bone=image > 500,
                        masks={"periosteal": outer, "trabecular": inner}, n_slices=4,
                        title="scan", path=path)
    assert len(figure.axes) == 4
    # the contours were drawn: each panel has contour collections
    assert all(len(ax.collections) >= 2 for ax in figure.axes)
    picture = __import__("matplotlib.image", fromlist=["imread"]).imread(path)
    assert picture.shape[0] > 100 and picture.shape[2] in (3, 4)


def test_montage_rejects_2d():
    with pytest.raises(ValueError, match="3D"):
        qc.montage(np.zeros((4, 4)), spacing=1)


def test_contact_sheet_and_trajectories(tmp_path):
    image, _, _ = _scan()
    paths = []
    for n in range(3):
        paths.append(tmp_path / f"{n}.png")
        qc.montage(image, spacing=0.082, n_slices=1, path=paths[-1])
    sheet = qc.contact_sheet(paths, labels=["a", "b", "c"], columns=2,
                             path=tmp_path / "sheet.png")
    assert len(sheet.axes) == 3 and (tmp_path / "sheet.png").stat().st_size > 0
    rows = {"subject": ["s1"] * 3 + ["s2"] * 3,
            "visit": ["baseline", "on_ai", "post_withdrawal"] * 2,
            "measure": ["Conn.D"] * 6, "value": [4, 3, 3, 5, 4, 4.1]}
    figure = qc.trajectories(rows, measure="Conn.D", unit="1/mm³", path=tmp_path / "t.png")
    lines = figure.axes[0].lines
    assert len(lines) == 2
    assert list(lines[0].get_ydata()) == [4, 3, 3]
