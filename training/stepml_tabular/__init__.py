"""stepml's built-in tabular models: column roles -> features (``columns``), the algorithm families and how
one is chosen and refit (``estimators``), metrics (``metrics``) and the HistGradientBoosting fast
prediction path (``fast_path``).

``train.py`` and ``inference.py`` beside this package import it by this top-level name (script mode puts
their folder on ``sys.path``), so a pickled model refers to ``stepml_tabular.*`` wherever it is loaded.
Runs on the SageMaker scikit-learn image 1.2-1 (Python 3.9, scikit-learn 1.2.1, pandas 1.1.3).
"""
