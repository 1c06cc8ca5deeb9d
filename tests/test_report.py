"""The run report (pipeline/report.py): fingerprints shortened, nothing else changed."""
from pipeline import report


def test_every_digest_of_a_fingerprint_is_shortened():
    code = "58 files, 440166 bytes, sha256:" + "a1" * 32 + "; init_checkpoint 4 files, 83 bytes, sha256:" + "b2" * 32
    assert report._short(code) == ("58 files, 440166 bytes, sha256:a1a1a1a1a1a1; "
                                   "init_checkpoint 4 files, 83 bytes, sha256:b2b2b2b2b2b2")
    assert report._short("24 files, 9 bytes, sha256:" + "c" * 64) == "24 files, 9 bytes, sha256:cccccccccccc"
    assert report._short("") == ""
