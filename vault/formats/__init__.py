"""Outside formats: KeePass, Bitwarden and CSV imports and the KeePass export."""
