# compiled core placeholder: address matching lands here
