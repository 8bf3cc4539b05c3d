"""The roles a floor machine plays (collector, workstation, door, cctv, retention): the model
of each role's file, and which capabilities each role runs."""
