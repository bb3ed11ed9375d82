"""Job modules that come with pytxmr (``python -m pytxmr run --mapper CMD``):
shipped to the cluster as source like any user's job module, so they may
import only pytxmr and the standard library, and no relative imports."""
