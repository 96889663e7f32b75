"""The vocabulary used to annotate data: categories, uses (purposes), subjects, lawful bases,
jurisdictions. Shipped as YAML; the loader rejects unknown keys and unknown attributes."""

from complai.taxonomy.loader import Taxonomy, Term, load_taxonomy

__all__ = ["Taxonomy", "Term", "load_taxonomy"]
