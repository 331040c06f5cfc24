"""The folder ``pyinfer env`` puts on GST_PLUGIN_PATH: its ``python/`` subfolder holds the loader shims."""
