"""`make demo`: the whole product on one machine (stack.py starts it, flow.py drives it, report.py prints it).

Development harness, not product. The e2e test (tests/e2e/test_demo_flow.py) runs the same flow.
"""
