"""The tumour board: a finished run read at the site, the regimen comparison, its command line and page."""
