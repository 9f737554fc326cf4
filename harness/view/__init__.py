"""`iwsft view`: a static page of the tables, figures and every response (harness/view/page.py)."""
