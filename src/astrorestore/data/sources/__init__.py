"""Where images come from: telescope frames, the tile cache's datasets, photographs, embedded demo frames."""
