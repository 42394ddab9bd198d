# compiled core placeholder: the codec lands here
