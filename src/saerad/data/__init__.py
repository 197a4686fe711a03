"""Reports, images, dataset adapters and phantom radiographs."""
