"""HTTP endpoints, one module per resource; each exports `ENDPOINTS`."""
