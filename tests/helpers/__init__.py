"""Writers of small test datasets in the real file formats, shared by the test-suite."""
