"""Stack -> [ProgramSpec] -> [RenderedFile] -> files on disk: spec (the data), facts (the host's), plan
(pure decisions), render (pure text), write (atomic files), pipeline (the four in order)."""
