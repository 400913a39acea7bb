"""Vocabulary presets match the benchmark metadata; custom specs are validated with reasons."""
import numpy as np
import pytest

from sfs_ros.core.frame import SfsError
from sfs_ros.core.vocabulary import (
    PRESETS,
    Vocabulary,
    VocabularyError,
    load_vocabulary,
    palette_for,
)

# (train id, name, gtFine label id) from the Cityscapes label definitions.
CITYSCAPES = [
    (0, "road", 7), (1, "sidewalk", 8), (2, "building", 11), (3, "wall", 12), (4, "fence", 13),
    (5, "pole", 17), (6, "traffic light", 19), (7, "traffic sign", 20), (8, "vegetation", 21),
    (9, "terrain", 22), (10, "sky", 23), (11, "person", 24), (12, "rider", 25), (13, "car", 26),
    (14, "truck", 27), (15, "bus", 28), (16, "train", 31), (17, "motorcycle", 32),
    (18, "bicycle", 33),
]


@pytest.mark.parametrize("name,count", [
    ("cityscapes", 19), ("ade20k", 150), ("ade20k_full", 847), ("coco", 80), ("shapes", 13),
])
def test_preset_counts_palette_and_ids(name, count):
    vocab = load_vocabulary(name)
    assert vocab.name == name
    assert len(vocab) == count == len(vocab.names)
    assert [c.id for c in vocab.classes] == list(range(count))
    assert vocab.palette.shape == (count, 3) and vocab.palette.dtype == np.uint8
    names = [n.casefold() for n in vocab.names]
    assert len(set(names)) == count
    assert all(c.synonyms[0] == c.name == c.name.strip() != "" for c in vocab.classes)


def test_presets_tuple():
    assert PRESETS == ("cityscapes", "ade20k", "ade20k_full", "coco", "shapes")


def test_cityscapes_train_and_label_ids():
    vocab = load_vocabulary("cityscapes")
    assert [(c.id, c.name) for c in vocab.classes] == [(i, n) for i, n, _ in CITYSCAPES]
    assert vocab.extra["label_id"] == tuple(lid for _, _, lid in CITYSCAPES)
    assert vocab.extra["label_id"][vocab.names.index("road")] == 7
    assert vocab.names[vocab.extra["label_id"].index(33)] == "bicycle"


def test_known_colours():
    assert load_vocabulary("cityscapes").classes[0].color == (128, 64, 128)
    assert load_vocabulary("cityscapes").palette[0].tolist() == [128, 64, 128]
    ade = load_vocabulary("ade20k")
    assert ade.classes[0].name == "wall" and ade.classes[0].color == (120, 120, 120)


def test_synonyms_parsed():
    ade = load_vocabulary("ade20k")
    assert ade.classes[6].synonyms == ("road", "route")
    full = load_vocabulary("ade20k_full")
    building = full.classes[1]
    assert building.name == "building"
    assert building.synonyms == building.prompts_names == ("building", "edifice")
    cpu = full.classes[782]
    assert cpu.synonyms[:3] == ("central processing unit", "cpu", "c p u")


def test_generated_palettes_are_deterministic_bright_and_not_grey():
    coco = load_vocabulary("coco")
    assert np.array_equal(coco.palette, palette_for(80))
    pal = palette_for(847).astype(int)
    assert np.array_equal(palette_for(847), palette_for(847))
    assert len({tuple(c) for c in pal}) == 847
    assert (pal.max(axis=1) - pal.min(axis=1) > 60).all()  # saturated: never grey
    assert (pal.max(axis=1) >= 200).all()  # bright: never close to black (= unlabeled)
    assert palette_for(0).shape == (0, 3)


def test_custom_list_with_synonyms():
    vocab = load_vocabulary(["wall, brick", " Person ", "car"])
    assert isinstance(vocab, Vocabulary)
    assert vocab.name == "custom"
    assert vocab.names == ("wall", "Person", "car")
    assert vocab.classes[0].synonyms == ("wall", "brick")
    assert vocab.palette.tolist() == palette_for(3).tolist()
    assert dict(vocab.extra) == {}


def test_txt_file(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("# my classes\n\nchair\n  table, desk  \n# done\n")
    vocab = load_vocabulary(str(path))
    assert vocab.names == ("chair", "table")
    assert vocab.classes[1].synonyms == ("table", "desk")


def test_tsv_file_in_preset_format(tmp_path):
    path = tmp_path / "classes.tsv"
    path.write_text("# id\tname\tcolor\n# comment\n0\tgrass, lawn\t1,2,3\n1\tsoil\t4,5,6\n")
    vocab = load_vocabulary(str(path))
    assert vocab.name == "custom"
    assert vocab.classes[0].synonyms == ("grass", "lawn")
    assert vocab.palette.tolist() == [[1, 2, 3], [4, 5, 6]]


@pytest.mark.parametrize("spec,reason", [
    ([], "empty"),
    (["car", "  "], "empty class name"),
    (["car", "bus, , coach"], "empty synonym"),
    (["Car", "bus", " car "], "duplicate class name 'car'"),
    (["car", 3], "must be a string"),
    (42, "got int"),
    ("cityscape", "presets are cityscapes, ade20k, ade20k_full, coco"),
    ("car, bus", "must be given as a list"),
    ("missing_file.txt", "not found"),
])
def test_invalid_specs(spec, reason):
    with pytest.raises(VocabularyError, match=reason) as info:
        load_vocabulary(spec)
    assert isinstance(info.value, SfsError) and isinstance(info.value, ValueError)


def test_too_many_classes():
    with pytest.raises(VocabularyError, match="at most 65534"):
        load_vocabulary([f"c{i}" for i in range(65535)])
    assert len(load_vocabulary([f"c{i}" for i in range(65534)])) == 65534


@pytest.mark.parametrize("text,reason", [
    ("0\tcar\n", "header"),
    ("# id\tname\n1\tcar\n", "id must be 0"),
    ("# id\tname\tcolor\n0\tcar\t1,2\n", "color"),
    ("# id\tname\n0\tcar\textra\n", "expected 2 columns"),
    ("# id\tname\tlabel_id\n0\tcar\tseven\n", "label_id must be an integer"),
])
def test_invalid_tsv(tmp_path, text, reason):
    path = tmp_path / "bad.tsv"
    path.write_text(text)
    with pytest.raises(VocabularyError, match=reason):
        load_vocabulary(str(path))


def test_key_is_stable_and_tracks_synonyms(tmp_path):
    """The key names text-embedding caches on disk: its value is pinned (a new recipe must be a
    deliberate change), it follows the synonyms and their order, and not the colours."""
    key = load_vocabulary(["wall, brick", "car"]).key
    assert key == "31f3a3cb67f856abb0ae7604f31fcdba57db93c7"  # sha1 of [["wall", "brick"], ["car"]]
    recoloured = tmp_path / "recoloured.tsv"
    recoloured.write_text("# id\tname\tcolor\n0\twall, brick\t1,2,3\n1\tcar\t4,5,6\n")
    assert load_vocabulary(str(recoloured)).key == key
    assert load_vocabulary(["wall, brick", "car"]).key == key
    assert load_vocabulary(["wall, stone", "car"]).key != key
    assert load_vocabulary(["car", "wall, brick"]).key != key
    assert load_vocabulary("cityscapes").key == load_vocabulary("cityscapes").key
