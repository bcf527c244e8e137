"""The successor's bundle: age and tar layers, the manifest format, its contents and the export."""
