"""editbench's version, in a module of its own: the modules that record it import this, not the
package, whose lazy API attributes import the harness (an import cycle otherwise)."""

__version__ = "0.1.0"
