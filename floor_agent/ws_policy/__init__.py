"""The workstation's central policy: the collector's signed document for this workstation,
pulled, verified, cached and handed to the USB guard and netlock (see apply.py)."""
