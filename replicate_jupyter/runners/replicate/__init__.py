"""runners/replicate"""
