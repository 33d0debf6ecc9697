"""Lightning data modules: which images a run trains, validates and tests on."""
