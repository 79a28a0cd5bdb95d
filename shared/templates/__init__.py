"""Report templates (a package only so that packaging ships its *.j2 files with `shared`)."""
