"""Unit tests of the wire contract: schemas, codecs, compatibility."""
