"""The HyperDriveAccelerator API: models, constants and the generated CRD."""
