"""The model side: load, compress, distribute, verify, fidelity, MTP, calibration data and task scores. Never reaches up into stages."""
