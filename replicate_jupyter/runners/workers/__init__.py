"""runners/workers"""
