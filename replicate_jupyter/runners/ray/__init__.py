"""runners/ray"""
