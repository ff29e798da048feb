#!/usr/bin/env python
# coding: utf-8
# (what `jupyter nbconvert --to script my_notebook.ipynb` writes)

# In[1]:


def say_hello(name):
    return f"hello, {name}"
