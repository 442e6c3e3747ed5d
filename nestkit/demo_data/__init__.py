"""Bundled demo data (see LICENSE.md); read it through nestkit.data.demo_manifests()."""
